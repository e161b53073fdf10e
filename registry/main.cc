// polis-registry: inspect, change and serve a model registry root.
//
//   polis-registry list     --root DIR [--json]
//   polis-registry show     --root DIR MODEL [VERSION|ALIAS]
//   polis-registry verify   --root DIR MODEL [VERSION|ALIAS]
//   polis-registry aliases  --root DIR MODEL            (aliases and their history, JSON)
//   polis-registry promote  --root DIR MODEL ALIAS VERSION [--why TEXT] [--who NAME]
//   polis-registry rollback --root DIR MODEL ALIAS [--why TEXT] [--who NAME]
//   polis-registry unalias  --root DIR MODEL ALIAS [--why TEXT] [--who NAME]
//   polis-registry delete   --root DIR MODEL VERSION [--force] [--why TEXT] [--who NAME]
//   polis-registry export-onnx --root DIR MODEL [VERSION]  (writes model.onnx beside the artifact)
//   polis-registry serve    --root DIR --listen HOST:PORT [--threads N] [--tokens FILE] ...
//
// A running server notices promote/rollback/unalias/delete made here within
// its poll interval and swaps without dropping a request.
// Exit codes: 0 ok, 1 a check or an operation failed, 2 bad flags.
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>

#include "common/artifact/artifact.h"
#include "common/fs.h"
#include "registry/aliases.h"
#include "registry/http.h"
#include "registry/onnx_export.h"
#include "registry/server.h"
#include "registry/store.h"

namespace {

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

std::string DefaultWho() {
  const char* u = std::getenv("USER");
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  return fmt::format("{}@{}", u && *u ? u : "unknown", host);
}

}  // namespace

int main(int argc, char** argv) {
  namespace reg = polis::registry;
  CLI::App app{"polis-registry: inspect, change and serve a Polis model registry"};
  app.require_subcommand(1);
  std::string root = "registry-root", model, ref, alias, why, who = DefaultWho();
  int64_t version = 0;
  bool as_json = false, force = false;
  auto* list = app.add_subcommand("list", "models and their versions");
  auto* show = app.add_subcommand("show", "metadata.json of a version (latest by default)");
  auto* verify = app.add_subcommand("verify", "re-read a version and check its checksum and shape");
  auto* aliases = app.add_subcommand("aliases", "a model's aliases and their history (JSON)");
  auto* promote = app.add_subcommand("promote", "point an alias at a version");
  auto* rollback = app.add_subcommand("rollback", "move an alias back to its previous version");
  auto* unalias = app.add_subcommand("unalias", "remove an alias");
  auto* del = app.add_subcommand("delete", "delete a version (refused while an alias names it)");
  auto* onnx = app.add_subcommand("export-onnx", "write model.onnx (ONNX opset 13) beside a version's artifact");
  auto* serve = app.add_subcommand("serve", "serve the models over HTTP (Open Inference Protocol v2)");
  for (auto* c : {list, show, verify, aliases, promote, rollback, unalias, del, onnx, serve})
    c->add_option("--root", root, "registry root")->capture_default_str();
  list->add_flag("--json", as_json, "print JSON");
  for (auto* c : {show, verify, onnx}) {
    c->add_option("model", model, "model name")->required();
    c->add_option("version", ref, "version number, alias or 'latest' (default: latest)");
  }
  aliases->add_option("model", model, "model name")->required();
  for (auto* c : {promote, rollback, unalias}) {
    c->add_option("model", model, "model name")->required();
    c->add_option("alias", alias, "alias name (production, staging, ...)")->required();
  }
  promote->add_option("version", version, "version number")->required();
  del->add_option("model", model, "model name")->required();
  del->add_option("version", version, "version number")->required();
  del->add_flag("--force", force, "also remove the aliases that point at it");
  for (auto* c : {promote, rollback, unalias, del}) {
    c->add_option("--why", why, "reason, kept in the alias history");
    c->add_option("--who", who, "who does it, kept in the alias history")->capture_default_str();
  }

  reg::ServerOptions so;
  std::string listen = "127.0.0.1:8000";
  serve->add_option("--listen", listen, "HOST:PORT (port 0: any free port)")->capture_default_str();
  serve->add_option("--threads", so.threads, "HTTP I/O threads")->capture_default_str();
  serve->add_option("--tokens", so.tokens_file, "token file (JSON); without it nothing can be written");
  serve->add_option("--max-batch", so.batching.max_batch_size, "default max batch size per model")->capture_default_str();
  serve->add_option("--max-queue-delay-us", so.batching.max_queue_delay_us,
                    "default max time a request waits for others to batch with")->capture_default_str();
  serve->add_option("--max-queue-rows", so.batching.max_queue_rows, "rows queued per version before 503")->capture_default_str();
  serve->add_option("--compute-threads", so.batching.compute_threads,
                    "default OpenMP threads per loaded version")->capture_default_str();
  serve->add_option("--max-body-bytes", so.max_body_bytes, "request body limit (413)")->capture_default_str();
  serve->add_option("--max-upload-bytes", so.max_upload_bytes, "artifact upload limit (413)")->capture_default_str();
  serve->add_option("--max-tensor-elements", so.max_tensor_elements, "elements per input tensor (413)")->capture_default_str();
  serve->add_option("--read-timeout-ms", so.read_timeout_ms, "a request must arrive within this")->capture_default_str();
  serve->add_option("--idle-timeout-ms", so.idle_timeout_ms, "keep-alive idle limit")->capture_default_str();
  serve->add_option("--poll-ms", so.poll_interval_ms, "how often to look for changes on disk (0: never)")->capture_default_str();
  serve->add_option("--max-unpinned-versions", so.max_unpinned_versions,
                    "explicitly requested, non-aliased versions kept loaded per model")->capture_default_str();
  std::string port_file;
  serve->add_option("--port-file", port_file, "write the bound port here once listening");
  CLI11_PARSE(app, argc, argv);

  auto fail = [](const polis::Status& st) {
    std::fprintf(stderr, "polis-registry: %s\n", st.ToString().c_str());
    return 1;
  };
  auto print = [](const nlohmann::json& j) {
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  };
  auto resolve = [&]() -> polis::StatusOr<int64_t> {
    if (ref.empty() || ref == "0") return int64_t{0};
    return reg::ResolveVersionRef(root, model, ref);
  };
  const reg::Actor actor{who, why};
  auto change_json = [&](const reg::AliasChange& c) {
    nlohmann::json events = nlohmann::json::array();
    for (const auto& e : c.events) events.push_back(reg::AliasEventJson(e));
    return nlohmann::json{{"changed", c.changed()}, {"events", events},
                          {"aliases", reg::AliasTableJson(c.table)["aliases"]}};
  };

  if (*list) {
    auto models = reg::ListModels(root);
    if (!models.ok()) return fail(models.status());
    nlohmann::json out = nlohmann::json::object();
    for (const auto& m : *models) {
      auto versions = polis::ListVersions(root, m);
      if (!versions.ok()) return fail(versions.status());
      out[m] = *versions;
      if (!as_json) {
        std::string vs;
        for (int64_t v : *versions) vs += (vs.empty() ? "" : ", ") + std::to_string(v);
        auto table = reg::ReadAliases(root, m);
        std::string as;
        if (table.ok())
          for (const auto& [a, v] : table->aliases) as += fmt::format("{}{}={}", as.empty() ? "" : ", ", a, v);
        std::printf("%-32s versions: %s%s%s\n", m.c_str(), vs.c_str(), as.empty() ? "" : "  aliases: ",
                    as.c_str());
      }
    }
    if (as_json) std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  if (*show || *verify) {
    auto v = resolve();
    if (!v.ok()) return fail(v.status());
    auto r = *show ? reg::ReadMetadata(root, model, *v) : reg::VerifyVersion(root, model, *v);
    if (!r.ok()) return fail(r.status());
    return print(*r);
  }
  if (*onnx) {
    auto v = resolve();
    if (!v.ok()) return fail(v.status());
    auto path = reg::ExportOnnxFile(root, model, *v);
    if (!path.ok()) return fail(path.status());
    std::printf("%s\n", path->c_str());
    return 0;
  }
  if (*aliases) {
    auto t = reg::ReadAliases(root, model);
    if (!t.ok()) return fail(t.status());
    return print(reg::AliasTableJson(*t));
  }
  if (*promote || *rollback || *unalias || *del) {
    auto c = *promote    ? reg::SetAlias(root, model, alias, version, actor)
             : *rollback ? reg::RollbackAlias(root, model, alias, actor)
             : *unalias  ? reg::RemoveAlias(root, model, alias, actor)
                         : reg::DeleteVersion(root, model, version, force, actor);
    if (!c.ok()) return fail(c.status());
    return print(change_json(*c));
  }

  // serve
  auto hp = reg::ParseHostPort(listen);
  if (!hp.ok()) return fail(hp.status());
  so.root = root;
  so.host = hp->first;
  so.port = hp->second;
  reg::RegistryServer server(so);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);
  if (polis::Status st = server.Start(); !st.ok()) return fail(st);
  std::printf("polis-registry serving %s on http://%s:%d\n", root.c_str(), so.host.c_str(), server.port());
  std::fflush(stdout);
  if (!port_file.empty()) {
    if (polis::Status st = polis::WriteFileAtomic(port_file, std::to_string(server.port()) + "\n"); !st.ok())
      return fail(st);
  }
  while (!g_stop) usleep(100 * 1000);
  std::printf("polis-registry: stopping\n");
  server.Stop();
  return 0;
}
