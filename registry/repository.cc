#include "registry/repository.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <set>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "common/log.h"
#include "common/thread_name.h"
#include "registry/metrics.h"
#include "registry/store.h"

namespace polis::registry {
namespace {

using Clock = std::chrono::steady_clock;

std::string StatStamp(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return "-";
  return fmt::format("{}:{}.{}:{}", st.st_ino, st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_size);
}

// The sha256 recorded in a version's metadata.json; "" if unreadable.
std::string ShaOnDisk(const std::string& root, const std::string& model, int64_t version) {
  auto text = ReadFile(fmt::format("{}/{}/{}/{}", root, model, version, kMetadataFileName));
  if (!text.ok()) return "";
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("sha256") || !j["sha256"].is_string())
    return "";
  return j["sha256"].get<std::string>();
}

int64_t DefaultVersion(const std::map<std::string, int64_t>& aliases,
                       const std::vector<int64_t>& versions) {
  auto it = aliases.find(kDefaultAlias);
  if (it != aliases.end() && std::binary_search(versions.begin(), versions.end(), it->second))
    return it->second;
  return versions.empty() ? 0 : versions.back();
}

}  // namespace

Repository::Repository(RepositoryOptions options, Metrics* metrics)
    : opt_(std::move(options)), metrics_(metrics) {}

Repository::~Repository() { Stop(); }

Status Repository::Start() {
  POLIS_RETURN_IF_ERROR(MakeDirectories(opt_.root));
  POLIS_ASSIGN_OR_RETURN(auto names, ListModels(opt_.root));
  (void)names;
  RefreshAll();
  ready_ = true;
  if (opt_.poll_interval_ms > 0) poller_ = std::thread([this] {
    SetThreadName("repo-poll");
    PollLoop();
  });
  return Status::Ok();
}

void Repository::Stop() {
  {
    std::lock_guard<std::mutex> lock(poll_mu_);
    stop_ = true;
  }
  poll_cv_.notify_all();
  if (poller_.joinable()) poller_.join();
  std::map<std::string, std::shared_ptr<Entry>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    dropped.swap(models_);
  }
  ready_ = false;
  dropped.clear();  // outside the lock: each version drains its queue
}

void Repository::PollLoop() {
  std::unique_lock<std::mutex> lock(poll_mu_);
  while (!stop_) {
    poll_cv_.wait_for(lock, std::chrono::milliseconds(opt_.poll_interval_ms));
    if (stop_) break;
    lock.unlock();
    RefreshAll();
    lock.lock();
  }
}

std::shared_ptr<Repository::Entry> Repository::FindEntry(const std::string& model) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(model);
  return it == models_.end() ? nullptr : it->second;
}

std::shared_ptr<Repository::Entry> Repository::GetOrCreateEntry(const std::string& model) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& e = models_[model];
  if (!e) {
    e = std::make_shared<Entry>();
    e->options = opt_.batching;
  }
  return e;
}

std::string Repository::Fingerprint(const std::string& model) const {
  const std::string dir = opt_.root + "/" + model;
  std::vector<std::string> parts;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (ParseVersionNumber(name) > 0) parts.push_back(name + "=" + StatStamp(it->path().string()));
  }
  std::sort(parts.begin(), parts.end());
  return fmt::format("{}|a={}|c={}", fmt::join(parts, ","), StatStamp(dir + "/" + kAliasesFileName),
                     StatStamp(dir + "/" + kModelConfigFileName));
}

void Repository::RefreshAll() {
  auto names = ListModels(opt_.root);
  if (!names.ok()) {
    POLIS_LOG(kWarn, kRegistry, "cannot list the registry root: {}", names.status().ToString());
    return;
  }
  for (const auto& m : *names) {
    auto e = GetOrCreateEntry(m);
    std::string known;
    {
      std::lock_guard<std::mutex> lock(mu_);
      known = e->fingerprint;
    }
    if (Fingerprint(m) == known) continue;
    std::lock_guard<std::mutex> admin(e->admin_mu);
    Status st = RefreshLocked(m, e.get());
    if (!st.ok()) POLIS_LOG(kWarn, kRegistry, "model '{}': {}", m, st.ToString());
  }
  // Models whose directory is gone.
  std::vector<std::shared_ptr<Entry>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = models_.begin(); it != models_.end();) {
      if (!std::binary_search(names->begin(), names->end(), it->first)) {
        POLIS_LOG(kInfo, kRegistry, "model '{}' is gone from the root; unloading it", it->first);
        dropped.push_back(it->second);
        it = models_.erase(it);
      } else {
        ++it;
      }
    }
  }
}

Status Repository::Refresh(const std::string& model) {
  POLIS_RETURN_IF_ERROR(ValidateModelName(model));
  auto e = GetOrCreateEntry(model);
  std::lock_guard<std::mutex> admin(e->admin_mu);
  return RefreshLocked(model, e.get());
}

Status Repository::RefreshLocked(const std::string& model, Entry* e) {
  const std::string fingerprint = Fingerprint(model);
  std::vector<std::string> problems;
  std::optional<std::string> new_reason;
  auto listed = ListVersions(opt_.root, model);
  std::vector<int64_t> versions;
  if (listed.ok()) versions = *listed;
  else problems.push_back(listed.status().message());

  std::map<std::string, int64_t> disk_aliases;
  bool aliases_ok = true;
  if (listed.ok()) {
    auto table = ReadAliases(opt_.root, model);
    if (table.ok()) disk_aliases = table->aliases;
    else {
      aliases_ok = false;
      problems.push_back(table.status().message());
    }
  }
  BatchingOptions options;
  std::map<std::string, int64_t> old_aliases;
  std::map<int64_t, std::shared_ptr<ServedVersion>> current;
  {
    std::lock_guard<std::mutex> lock(mu_);
    options = e->options;
    old_aliases = e->aliases;
    for (const auto& [v, slot] : e->slots) current[v] = slot.sv;
  }
  if (!aliases_ok) disk_aliases = old_aliases;  // keep serving what we had
  auto read_options = ReadModelConfig(opt_.root, model, opt_.batching);
  if (read_options.ok()) options = *read_options;
  else problems.push_back(read_options.status().message());

  auto exists = [&](int64_t v) { return std::binary_search(versions.begin(), versions.end(), v); };
  std::set<int64_t> pinned;
  if (!versions.empty()) pinned.insert(versions.back());
  for (const auto& [name, v] : disk_aliases)
    if (exists(v)) pinned.insert(v);

  // A loaded version is stale when its file was replaced (same number,
  // other bytes) or its batching options changed.
  std::map<int64_t, std::string> disk_sha;
  auto stale = [&](int64_t v, const std::shared_ptr<ServedVersion>& sv) {
    if (!disk_sha.count(v)) disk_sha[v] = ShaOnDisk(opt_.root, model, v);
    return sv->options() != options || disk_sha[v] != sv->sha256();
  };

  // Load (and warm) what must be served, before anything switches.
  std::map<int64_t, std::shared_ptr<ServedVersion>> loaded;
  std::map<int64_t, std::string> errors;
  for (int64_t v : pinned) {
    auto it = current.find(v);
    if (it != current.end() && it->second && !stale(v, it->second)) continue;
    auto sv = ServedVersion::Load(opt_.root, model, v, options, metrics_);
    if (sv.ok()) {
      loaded[v] = *sv;
    } else {
      errors[v] = sv.status().ToString();
      problems.push_back(fmt::format("version {} failed to load: {}", v, sv.status().ToString()));
      POLIS_LOG(kWarn, kRegistry, "model '{}' version {} failed to load: {}", model, v,
                sv.status().ToString());
    }
  }

  // Disk reads happen here, not under mu_.
  std::set<int64_t> stale_unpinned;
  for (const auto& [v, sv] : current)
    if (sv && !pinned.count(v) && exists(v) && stale(v, sv)) stale_unpinned.insert(v);

  std::vector<std::shared_ptr<ServedVersion>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [v, sv] : loaded) {
      Slot& s = e->slots[v];
      if (s.sv) dropped.push_back(std::move(s.sv));
      s.sv = sv;
      s.last_used = Clock::now();
    }
    // Aliases switch only to loaded targets; an alias whose new target
    // failed keeps its old one while that is still loaded (and pinned).
    auto loaded_now = [&](int64_t v) {
      auto it = e->slots.find(v);
      return it != e->slots.end() && it->second.sv && exists(v);
    };
    std::map<std::string, int64_t> effective;
    for (const auto& [name, v] : disk_aliases) {
      auto old = old_aliases.find(name);
      if (!loaded_now(v) && old != old_aliases.end() && loaded_now(old->second)) {
        effective[name] = old->second;
        pinned.insert(old->second);
        problems.push_back(fmt::format("alias '{}' still serves version {}: version {} is not loaded",
                                       name, old->second, v));
      } else {
        effective[name] = v;
      }
    }
    for (auto it = e->slots.begin(); it != e->slots.end();) {
      const int64_t v = it->first;
      // Unpinned and never asked for by number: it was an alias target or
      // the latest, and no longer is.
      const bool gone = !exists(v) || !it->second.sv || (!pinned.count(v) && !it->second.on_demand);
      const bool replace = !gone && stale_unpinned.count(v) && it->second.sv == current[v];
      if (gone || replace) {
        if (it->second.sv) dropped.push_back(std::move(it->second.sv));
        it = e->slots.erase(it);
        continue;
      }
      it->second.pinned = pinned.count(v) > 0;
      ++it;
    }
    // Evict least recently used unpinned versions beyond the cap.
    std::vector<std::pair<Clock::time_point, int64_t>> unpinned;
    for (const auto& [v, s] : e->slots)
      if (!s.pinned) unpinned.emplace_back(s.last_used, v);
    std::sort(unpinned.begin(), unpinned.end());
    for (size_t i = 0; i + opt_.max_unpinned_versions < unpinned.size(); ++i) {
      dropped.push_back(std::move(e->slots[unpinned[i].second].sv));
      e->slots.erase(unpinned[i].second);
    }
    e->versions = versions;
    e->aliases = std::move(effective);
    e->options = options;
    e->load_errors = std::move(errors);
    std::string reason = fmt::format("{}", fmt::join(problems, "; "));
    if (reason != e->reason) new_reason = reason;
    e->reason = std::move(reason);
    e->fingerprint = fingerprint;
  }
  dropped.clear();  // outside the lock; a version still in use lives on with its requests
  // Said once when it appears or changes (also in the registry's listing):
  // a bad config.json or aliases.json keeps the previous settings.
  if (new_reason && !new_reason->empty())
    POLIS_LOG(kWarn, kRegistry, "model '{}': {}", model, *new_reason);
  if (!listed.ok()) return listed.status();
  return Status::Ok();
}

StatusOr<std::shared_ptr<ServedVersion>> Repository::Acquire(const std::string& model,
                                                             const std::string& ref) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(model);
  if (it == models_.end()) {
    std::vector<std::string> names;
    for (const auto& [n, _] : models_) names.push_back(n);
    return NotFound("model '{}' is not in the registry (models: {})", model,
                    names.empty() ? "none" : fmt::format("{}", fmt::join(names, ", ")));
  }
  Entry& e = *it->second;
  int64_t v = 0;
  if (ref.empty()) {
    v = DefaultVersion(e.aliases, e.versions);
    if (v == 0) return NotFound("model '{}' has no versions", model);
  } else {
    POLIS_ASSIGN_OR_RETURN(v, ResolveVersionRef(model, ref, e.aliases, e.versions));
  }
  auto slot = e.slots.find(v);
  if (slot == e.slots.end() || !slot->second.sv) {
    return std::shared_ptr<ServedVersion>();
  }
  slot->second.last_used = Clock::now();
  if (!ref.empty() && ParseVersionNumber(ref) > 0) slot->second.on_demand = true;
  return slot->second.sv;
}

StatusOr<std::shared_ptr<ServedVersion>> Repository::EnsureLoadedLocked(const std::string& model,
                                                                        Entry* e, int64_t version,
                                                                        bool on_demand) {
  BatchingOptions options;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = e->slots.find(version);
    if (it != e->slots.end() && it->second.sv) {
      it->second.last_used = Clock::now();
      it->second.on_demand |= on_demand;
      return it->second.sv;
    }
    options = e->options;
  }
  auto sv = ServedVersion::Load(opt_.root, model, version, options, metrics_);
  if (!sv.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    e->load_errors[version] = sv.status().ToString();
    return sv.status();
  }
  std::vector<std::shared_ptr<ServedVersion>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Slot& s = e->slots[version];
    s.sv = *sv;
    s.last_used = Clock::now();
    s.on_demand = on_demand;
    e->load_errors.erase(version);
    // The new one counts against the cap, but is never the one evicted.
    std::vector<std::pair<Clock::time_point, int64_t>> others;
    size_t unpinned = 0;
    for (const auto& [v, slot] : e->slots) {
      if (slot.pinned) continue;
      ++unpinned;
      if (v != version) others.emplace_back(slot.last_used, v);
    }
    std::sort(others.begin(), others.end());
    const size_t cap = static_cast<size_t>(std::max<int64_t>(1, opt_.max_unpinned_versions));
    for (size_t i = 0; unpinned > cap && i < others.size(); ++i, --unpinned) {
      dropped.push_back(std::move(e->slots[others[i].second].sv));
      e->slots.erase(others[i].second);
    }
  }
  return *sv;
}

StatusOr<std::shared_ptr<ServedVersion>> Repository::Load(const std::string& model,
                                                          const std::string& ref) {
  auto r = Acquire(model, ref);
  if (!r.ok() && r.status().code() == Code::kNotFound && ValidateModelName(model).ok() &&
      std::filesystem::is_directory(opt_.root + "/" + model)) {
    // Perhaps published or promoted by another process since the last poll;
    // re-read only if the model changed on disk (bogus names cost a stat).
    auto e = FindEntry(model);
    std::string known;
    if (e) {
      std::lock_guard<std::mutex> lock(mu_);
      known = e->fingerprint;
    }
    if (!e || Fingerprint(model) != known) {
      POLIS_RETURN_IF_ERROR(Refresh(model));
      r = Acquire(model, ref);
    }
  }
  if (!r.ok() || *r) return r;
  auto e = FindEntry(model);
  if (!e) return NotFound("model '{}' is not in the registry", model);
  std::lock_guard<std::mutex> admin(e->admin_mu);
  int64_t v = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ref.empty()) v = DefaultVersion(e->aliases, e->versions);
    else {
      POLIS_ASSIGN_OR_RETURN(v, ResolveVersionRef(model, ref, e->aliases, e->versions));
    }
  }
  if (v == 0) return NotFound("model '{}' has no versions", model);
  return EnsureLoadedLocked(model, e.get(), v, /*on_demand=*/ParseVersionNumber(ref) > 0);
}

ModelStatus Repository::StatusOf(const std::string& name, const Entry& e) const {
  ModelStatus s;
  s.name = name;
  s.versions = e.versions;
  s.aliases = e.aliases;
  s.default_version = DefaultVersion(e.aliases, e.versions);
  s.reason = e.reason;
  for (int64_t v : e.versions) {
    VersionStatus vs;
    vs.version = v;
    auto it = e.slots.find(v);
    vs.loaded = it != e.slots.end() && it->second.sv;
    vs.pinned = it != e.slots.end() && it->second.pinned;
    if (!vs.loaded) {
      auto err = e.load_errors.find(v);
      vs.reason = err != e.load_errors.end() ? err->second : "not loaded; loads on first request";
    }
    if (v == s.default_version) s.ready = vs.loaded;
    s.version_status.push_back(std::move(vs));
  }
  if (!s.ready && s.reason.empty())
    s.reason = s.versions.empty() ? "no versions" : "the default version is not loaded";
  return s;
}

StatusOr<ModelStatus> Repository::Describe(const std::string& model) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(model);
  if (it == models_.end()) return NotFound("model '{}' is not in the registry", model);
  return StatusOf(model, *it->second);
}

std::vector<ModelStatus> Repository::DescribeAll() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ModelStatus> out;
  for (const auto& [name, e] : models_) out.push_back(StatusOf(name, *e));
  return out;
}

namespace {
Status ModelMustExist(const std::string& root, const std::string& model) {
  POLIS_RETURN_IF_ERROR(ValidateModelName(model));
  if (!std::filesystem::is_directory(root + "/" + model))
    return NotFound("model '{}' is not in the registry under '{}'", model, root);
  return Status::Ok();
}
}  // namespace

StatusOr<AliasChange> Repository::Promote(const std::string& model, const std::string& alias,
                                          int64_t version, const Actor& actor) {
  POLIS_RETURN_IF_ERROR(ValidateAliasName(alias));
  POLIS_RETURN_IF_ERROR(ModelMustExist(opt_.root, model));
  auto e = GetOrCreateEntry(model);
  std::lock_guard<std::mutex> admin(e->admin_mu);
  POLIS_ASSIGN_OR_RETURN(auto versions, ListVersions(opt_.root, model));
  if (!std::binary_search(versions.begin(), versions.end(), version))
    return NotFound("model '{}' has no version {} (versions: {})", model, version,
                    versions.empty() ? "none" : fmt::format("{}", fmt::join(versions, ", ")));
  // Loaded and warmed before the alias moves: traffic never waits for a load.
  auto sv = EnsureLoadedLocked(model, e.get(), version, false);
  if (!sv.ok())
    return FailedPrecondition("version {} of model '{}' cannot be served, alias '{}' not moved: {}",
                              version, model, alias, sv.status().ToString());
  POLIS_ASSIGN_OR_RETURN(AliasChange change, SetAlias(opt_.root, model, alias, version, actor));
  POLIS_RETURN_IF_ERROR(RefreshLocked(model, e.get()));
  return change;
}

StatusOr<AliasChange> Repository::Rollback(const std::string& model, const std::string& alias,
                                           const Actor& actor) {
  POLIS_RETURN_IF_ERROR(ValidateAliasName(alias));
  POLIS_RETURN_IF_ERROR(ModelMustExist(opt_.root, model));
  auto e = GetOrCreateEntry(model);
  std::lock_guard<std::mutex> admin(e->admin_mu);
  POLIS_ASSIGN_OR_RETURN(AliasTable table, ReadAliases(opt_.root, model));
  POLIS_ASSIGN_OR_RETURN(auto versions, ListVersions(opt_.root, model));
  POLIS_ASSIGN_OR_RETURN(int64_t target, RollbackTarget(table, alias, versions));
  auto sv = EnsureLoadedLocked(model, e.get(), target, false);
  if (!sv.ok())
    return FailedPrecondition("version {} of model '{}' cannot be served, alias '{}' not rolled back: {}",
                              target, model, alias, sv.status().ToString());
  POLIS_ASSIGN_OR_RETURN(AliasChange change, RollbackAlias(opt_.root, model, alias, actor));
  POLIS_RETURN_IF_ERROR(RefreshLocked(model, e.get()));
  return change;
}

StatusOr<AliasChange> Repository::Unalias(const std::string& model, const std::string& alias,
                                          const Actor& actor) {
  POLIS_RETURN_IF_ERROR(ModelMustExist(opt_.root, model));
  auto e = GetOrCreateEntry(model);
  std::lock_guard<std::mutex> admin(e->admin_mu);
  POLIS_ASSIGN_OR_RETURN(AliasChange change, RemoveAlias(opt_.root, model, alias, actor));
  POLIS_RETURN_IF_ERROR(RefreshLocked(model, e.get()));
  return change;
}

StatusOr<AliasChange> Repository::Delete(const std::string& model, int64_t version, bool force,
                                         const Actor& actor) {
  POLIS_RETURN_IF_ERROR(ModelMustExist(opt_.root, model));
  auto e = GetOrCreateEntry(model);
  std::lock_guard<std::mutex> admin(e->admin_mu);
  POLIS_ASSIGN_OR_RETURN(AliasChange change, DeleteVersion(opt_.root, model, version, force, actor));
  POLIS_RETURN_IF_ERROR(RefreshLocked(model, e.get()));
  return change;
}

StatusOr<PublishedVersion> Repository::Publish(const std::string& model,
                                               const std::string& artifact_bytes,
                                               const Actor& actor) {
  POLIS_RETURN_IF_ERROR(ValidateModelName(model));
  const std::string source = fmt::format("uploaded artifact for model '{}'", model);
  // Checksum, header and finite weights and metrics (DecodeArtifact).
  POLIS_ASSIGN_OR_RETURN(ModelArtifact a, DecodeArtifact(artifact_bytes, source));
  {
    // Build it and run one batch of zeros: what is accepted can be served.
    BatchingOptions probe;
    probe.max_batch_size = 1;
    probe.max_queue_rows = 1;
    POLIS_ASSIGN_OR_RETURN(auto sv, ServedVersion::FromArtifact(model, 0, a, ArtifactSha256(artifact_bytes),
                                                              probe, nullptr));
    InferOutcome o = sv->InferSync(std::vector<float>(sv->input_elements(), 0.f), 1);
    if (!o.status.ok()) return o.status.WithContext(source);
    for (float x : o.logits)
      if (!std::isfinite(x))
        return InvalidArgument("{}: a forward pass of zeros gives non-finite outputs", source);
  }
  nlohmann::json extra = {{"published_by", actor.who}};
  if (!actor.why.empty()) extra["publish_reason"] = actor.why;
  // Refused while aliases.json is damaged: a publish is never missing from the history.
  POLIS_ASSIGN_OR_RETURN(PublishedVersion pub,
                         PublishRecorded(opt_.root, model, std::move(a), extra, actor));
  POLIS_RETURN_IF_ERROR(Refresh(model));
  return pub;
}

}  // namespace polis::registry
