// The serving side of a registry root: which versions of which models are
// loaded, what each alias points at, and how changes on disk become swaps.
//
// Pinned versions -- every alias target and each model's latest version --
// are kept loaded. Another version named explicitly in a request is loaded
// on demand and kept while recently used (at most max_unpinned_versions per
// model, least recently used evicted). A version that loses its pin (its
// alias moved away) is unloaded, unless requests name it explicitly.
//
// Zero-downtime swaps: when an alias moves (through this class, through
// `polis-registry promote` in another process, or by hand), the new target
// is loaded and warmed first; only then does the in-memory alias switch.
// Requests already holding the old version finish on it; when the last one
// lets go, the old version's thread and memory are freed. A target that
// fails to load leaves the alias serving its old version, and the failure is
// the model's `reason` in the repository index.
//
// Changes made by other processes are found by polling (poll_interval_ms):
// a cheap fingerprint (version directory names and inodes, aliases.json and
// config.json stat) per model; a changed one is re-read.
//
// Thread-safety: every method may be called from any thread. Acquire never
// blocks on a load (it says "not loaded"); the other methods may block for a
// load and are meant for a background thread. Lock order: a model's
// admin_mu, then mu_.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/artifact/artifact.h"
#include "registry/aliases.h"
#include "registry/served_version.h"

namespace polis::registry {

class Metrics;

inline constexpr char kDefaultAlias[] = "production";

struct RepositoryOptions {
  std::string root;
  BatchingOptions batching;           // defaults; <root>/<model>/config.json overrides
  int poll_interval_ms = 1000;        // 0: never look at the disk again after Start
  int64_t max_unpinned_versions = 2;  // per model
};

struct VersionStatus {
  int64_t version = 0;
  bool loaded = false;
  bool pinned = false;
  std::string reason;  // why it is not loaded
};

struct ModelStatus {
  std::string name;
  std::vector<int64_t> versions;            // on disk
  std::map<std::string, int64_t> aliases;   // as served (may lag the file while a target loads)
  std::vector<VersionStatus> version_status;
  int64_t default_version = 0;              // what /v2/models/{name}/infer uses; 0: none
  bool ready = false;                       // the default version is loaded
  std::string reason;                       // last load or read failure
};

class Repository {
 public:
  Repository(RepositoryOptions options, Metrics* metrics);
  ~Repository();
  Repository(const Repository&) = delete;
  Repository& operator=(const Repository&) = delete;

  // Reads every model under the root and loads its pinned versions (a model
  // that fails is reported, not fatal), then starts polling.
  Status Start();
  // Stops polling and unloads everything (each version drains its queue).
  void Stop();
  bool ready() const { return ready_; }
  const RepositoryOptions& options() const { return opt_; }

  // `ref`: "" (the default: alias "production" if set, else the latest
  // version), "latest", a number or an alias. NotFound for an unknown model
  // or version. A null pointer means the version exists but is not loaded:
  // call Load (off the I/O threads).
  StatusOr<std::shared_ptr<ServedVersion>> Acquire(const std::string& model,
                                                   const std::string& ref);
  // Acquire, loading the version if needed (blocks).
  StatusOr<std::shared_ptr<ServedVersion>> Load(const std::string& model, const std::string& ref);

  StatusOr<ModelStatus> Describe(const std::string& model) const;
  std::vector<ModelStatus> DescribeAll() const;

  // Writes: each loads what it will serve before the alias file changes.
  StatusOr<AliasChange> Promote(const std::string& model, const std::string& alias,
                                int64_t version, const Actor& actor);
  StatusOr<AliasChange> Rollback(const std::string& model, const std::string& alias,
                                 const Actor& actor);
  StatusOr<AliasChange> Unalias(const std::string& model, const std::string& alias,
                                const Actor& actor);
  StatusOr<AliasChange> Delete(const std::string& model, int64_t version, bool force,
                               const Actor& actor);
  // Verifies `artifact_bytes` (checksum, header, rebuild, a warm forward
  // pass) and publishes it as the next version; then refreshes.
  StatusOr<PublishedVersion> Publish(const std::string& model, const std::string& artifact_bytes,
                                     const Actor& actor);

  // Re-reads one model (or every model) from disk now and applies it.
  Status Refresh(const std::string& model);
  void RefreshAll();

 private:
  struct Slot {
    std::shared_ptr<ServedVersion> sv;
    bool pinned = false;
    bool on_demand = false;  // loaded for a request naming it; kept while recently used
    std::chrono::steady_clock::time_point last_used;
  };
  struct Entry {
    std::mutex admin_mu;  // serialises refreshes, loads and writes of this model
    // GUARDED_BY(Repository::mu_):
    std::vector<int64_t> versions;
    std::map<std::string, int64_t> aliases;
    std::map<int64_t, Slot> slots;
    std::map<int64_t, std::string> load_errors;
    BatchingOptions options;
    std::string reason;
    std::string fingerprint;
  };

  std::shared_ptr<Entry> FindEntry(const std::string& model) const;
  std::shared_ptr<Entry> GetOrCreateEntry(const std::string& model);
  // Holding e->admin_mu.
  Status RefreshLocked(const std::string& model, Entry* e);
  StatusOr<std::shared_ptr<ServedVersion>> EnsureLoadedLocked(const std::string& model, Entry* e,
                                                              int64_t version, bool on_demand);
  std::string Fingerprint(const std::string& model) const;
  ModelStatus StatusOf(const std::string& name, const Entry& e) const;  // holding mu_
  void PollLoop();

  RepositoryOptions opt_;
  Metrics* metrics_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> models_;  // GUARDED_BY(mu_)
  std::atomic<bool> ready_{false};

  std::mutex poll_mu_;
  std::condition_variable poll_cv_;
  bool stop_ = false;  // GUARDED_BY(poll_mu_)
  std::thread poller_;
};

}  // namespace polis::registry
