#include "registry/aliases.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include <fmt/ranges.h>

#include "common/artifact/artifact.h"
#include "common/env.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/echo.h"
#include "registry/store.h"

namespace polis::registry {
namespace {

using json = nlohmann::json;

constexpr char kFormat[] = "polis-aliases-1";

std::string ModelDir(const std::string& root, const std::string& model) {
  return root.empty() ? model : (root.back() == '/' ? root + model : root + "/" + model);
}

std::string Dump(const json& j, int indent = -1) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

// An exclusive flock on <model dir>/.lock, released by the destructor. flock
// locks belong to the open file description, so two threads of one process
// that each open the file exclude each other as two processes do.
class ModelLock {
 public:
  static StatusOr<ModelLock> Acquire(const std::string& model_dir) {
    const std::string path = model_dir + "/" + kLockFileName;
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoStatus("cannot open lock file", path, errno);
    // A deadline, not an unbounded wait: a stuck writer is reported.
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(env::TimeoutSeconds());
    auto sleep = std::chrono::microseconds(200);
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      if (err != EWOULDBLOCK && err != EINTR) {
        close(fd);
        return ErrnoStatus("cannot lock", path, err);
      }
      if (std::chrono::steady_clock::now() > deadline) {
        close(fd);
        return Timeout("'{}' stayed locked by another writer for {} s (POLIS_TIMEOUT_S)", path,
                       env::TimeoutSeconds());
      }
      std::this_thread::sleep_for(sleep);
      sleep = std::min(sleep * 2, std::chrono::microseconds(20000));
    }
    return ModelLock(fd);
  }
  ModelLock(ModelLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  ModelLock& operator=(ModelLock&&) = delete;
  ~ModelLock() {
    if (fd_ >= 0) close(fd_);  // closing the last descriptor releases the lock
  }

 private:
  explicit ModelLock(int fd) : fd_(fd) {}
  int fd_;
};

json NullableVersion(int64_t v) { return v > 0 ? json(v) : json(nullptr); }

json TableBody(const std::string& model, const AliasTable& t) {
  json aliases = json::object();
  for (const auto& [name, v] : t.aliases) aliases[name] = v;
  json history = json::array();
  for (const auto& e : t.history) history.push_back(AliasEventJson(e));
  return json{{"format", kFormat}, {"model", model}, {"aliases", aliases}, {"history", history}};
}

StatusOr<AliasEvent> ParseEvent(const json& j, const std::string& path, size_t index) {
  auto bad = [&](const char* field) {
    return DataLoss("'{}': history[{}].{} is missing or has the wrong type", path, index, field);
  };
  AliasEvent e;
  if (!j.is_object()) return DataLoss("'{}': history[{}] is not an object", path, index);
  auto str = [&](const char* key, std::string* out) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string()) return false;
    *out = it->get<std::string>();
    return true;
  };
  auto ver = [&](const char* key, int64_t* out) {
    auto it = j.find(key);
    if (it == j.end()) return false;
    if (it->is_null()) {
      *out = 0;
      return true;
    }
    if (!it->is_number_integer()) return false;
    *out = it->get<int64_t>();
    return *out > 0;
  };
  auto seq = j.find("seq");
  if (seq == j.end() || !seq->is_number_integer()) return bad("seq");
  e.seq = seq->get<int64_t>();
  if (!str("action", &e.action)) return bad("action");
  if (!str("alias", &e.alias)) return bad("alias");
  if (!ver("from", &e.from)) return bad("from");
  if (!ver("to", &e.to)) return bad("to");
  if (!str("who", &e.who)) return bad("who");
  if (!str("when", &e.when)) return bad("when");
  if (!str("why", &e.why)) return bad("why");
  return e;
}

StatusOr<AliasTable> ParseTable(const std::string& text, const std::string& path,
                                const std::string& model) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    return DataLoss("'{}' is damaged: not valid JSON at byte offset {} of {} (repair it, or move "
                    "it aside to start a new alias history)",
                    path, e.byte, text.size());
  }
  if (!j.is_object()) return DataLoss("'{}' is damaged: not a JSON object", path);
  auto sum = j.find("sha256");
  if (sum == j.end() || !sum->is_string())
    return DataLoss("'{}' has no \"sha256\" checksum field", path);
  const std::string stored = sum->get<std::string>();
  j.erase("sha256");
  const std::string computed = Sha256Hex(Dump(j));
  if (stored != computed)
    return DataLoss(
        "'{}': checksum mismatch: stored {}, computed {} (the file was edited or torn; repair it, "
        "or move it aside to start a new alias history)",
        path, EchoValue(stored), computed);
  auto text_of = [&](const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  if (text_of("format") != kFormat)
    return DataLoss("'{}': format is '{}', expected '{}'", path, EchoValue(text_of("format")),
                    kFormat);
  if (text_of("model") != model)
    return DataLoss("'{}' belongs to model '{}', not '{}'", path, EchoValue(text_of("model")),
                    model);
  AliasTable t;
  const json& aliases = j["aliases"];
  if (!aliases.is_object()) return DataLoss("'{}': \"aliases\" is not an object", path);
  for (const auto& [name, v] : aliases.items()) {
    if (!v.is_number_integer() || v.get<int64_t>() <= 0)
      return DataLoss("'{}': alias '{}' does not name a positive version", path, EchoValue(name));
    t.aliases[name] = v.get<int64_t>();
  }
  const json& history = j["history"];
  if (!history.is_array()) return DataLoss("'{}': \"history\" is not an array", path);
  for (size_t i = 0; i < history.size(); ++i) {
    POLIS_ASSIGN_OR_RETURN(AliasEvent e, ParseEvent(history[i], path, i));
    if (e.seq != static_cast<int64_t>(i) + 1)
      return DataLoss("'{}': history[{}].seq is {}, expected {}", path, i, e.seq, i + 1);
    t.history.push_back(std::move(e));
  }
  return t;
}

Status CheckModel(const std::string& root, const std::string& model) {
  POLIS_RETURN_IF_ERROR(ValidateModelName(model));
  std::error_code ec;
  if (!std::filesystem::is_directory(ModelDir(root, model), ec))
    return NotFound("model '{}' is not in the registry under '{}'", model, root);
  return Status::Ok();
}

StatusOr<AliasTable> ReadTableUnchecked(const std::string& root, const std::string& model) {
  const std::string path = ModelDir(root, model) + "/" + kAliasesFileName;
  if (!PathExists(path)) return AliasTable{};
  POLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseTable(text, path, model);
}

Status WriteTable(const std::string& root, const std::string& model, const AliasTable& t) {
  json j = TableBody(model, t);
  j["sha256"] = Sha256Hex(Dump(j));
  return WriteFileAtomic(ModelDir(root, model) + "/" + kAliasesFileName, Dump(j, 2) + "\n");
}

// The read-modify-write every writer shares: lock, read, let `mutate` append
// events (or refuse), write if anything was appended.
template <typename Mutate>
StatusOr<AliasChange> Modify(const std::string& root, const std::string& model,
                             const Actor& actor, Mutate mutate) {
  POLIS_RETURN_IF_ERROR(CheckModel(root, model));
  POLIS_ASSIGN_OR_RETURN(ModelLock lock, ModelLock::Acquire(ModelDir(root, model)));
  POLIS_ASSIGN_OR_RETURN(AliasTable table, ReadTableUnchecked(root, model));
  const size_t before = table.history.size();
  auto append = [&](std::string action, std::string alias, int64_t from, int64_t to) {
    AliasEvent e;
    e.seq = static_cast<int64_t>(table.history.size()) + 1;
    e.action = std::move(action);
    e.alias = std::move(alias);
    e.from = from;
    e.to = to;
    e.who = actor.who.empty() ? "unknown" : actor.who;
    e.when = UtcTimestamp();
    e.why = actor.why;
    table.history.push_back(e);
    if (to > 0 && !e.alias.empty()) table.aliases[e.alias] = to;
    if (to == 0 && !e.alias.empty()) table.aliases.erase(e.alias);
  };
  POLIS_RETURN_IF_ERROR(mutate(table, append));
  AliasChange change;
  if (table.history.size() != before) {
    POLIS_RETURN_IF_ERROR(WriteTable(root, model, table));
    change.events.assign(table.history.begin() + static_cast<std::ptrdiff_t>(before),
                         table.history.end());
    for (const auto& e : change.events)
      POLIS_LOG(kInfo, kRegistry, "model '{}': {} alias '{}' {} -> {} by {} ({})", model, e.action,
                e.alias, e.from, e.to, e.who, e.why);
  }
  change.table = std::move(table);
  return change;
}

// An alias only ever names a version whose artifact verifies (checksum,
// finite weights, the model rebuilds): checked under the lock, so what was
// verified is what the alias names.
Status VerifyTarget(const std::string& root, const std::string& model, const std::string& alias,
                    int64_t version, const char* verb) {
  auto ok = VerifyVersion(root, model, version);
  if (ok.ok()) return Status::Ok();
  return FailedPrecondition("version {} of model '{}' fails verification, alias '{}' not {}: {}",
                            version, model, alias, verb, ok.status().message());
}

std::string JoinAliases(const std::vector<std::string>& v) { return fmt::format("{}", fmt::join(v, ", ")); }

}  // namespace

int64_t ParseVersionNumber(const std::string& text) {
  if (text.empty() || text.size() > 18 || text[0] == '0') return 0;
  int64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return 0;
    v = v * 10 + (c - '0');
  }
  return v;
}

Status ValidateAliasName(const std::string& alias) {
  if (alias.empty() || alias.size() > kMaxAliasLength)
    return InvalidArgument("alias name must have 1..{} characters, got {}", kMaxAliasLength,
                           alias.size());
  if (!((alias[0] >= 'a' && alias[0] <= 'z') || (alias[0] >= 'A' && alias[0] <= 'Z')))
    return InvalidArgument("alias name '{}' must start with a letter (position 0)",
                           EchoValue(alias));
  for (size_t i = 0; i < alias.size(); ++i) {
    const char c = alias[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok)
      return InvalidArgument(
          "alias name '{}' has a character outside [A-Za-z0-9._-] at position {}",
          EchoValue(alias), i);
  }
  if (alias == kLatest)
    return InvalidArgument("alias name 'latest' is reserved: it always means the highest version");
  return Status::Ok();
}

nlohmann::json AliasEventJson(const AliasEvent& e) {
  return json{{"seq", e.seq},   {"action", e.action}, {"alias", e.alias}, {"from", NullableVersion(e.from)},
              {"to", NullableVersion(e.to)}, {"who", e.who}, {"when", e.when}, {"why", e.why}};
}

nlohmann::json AliasTableJson(const AliasTable& t) {
  json aliases = json::object();
  for (const auto& [name, v] : t.aliases) aliases[name] = v;
  json history = json::array();
  for (const auto& e : t.history) history.push_back(AliasEventJson(e));
  return json{{"aliases", aliases}, {"history", history}};
}

StatusOr<AliasTable> ReadAliases(const std::string& root, const std::string& model) {
  POLIS_RETURN_IF_ERROR(CheckModel(root, model));
  return ReadTableUnchecked(root, model);
}

StatusOr<AliasChange> SetAlias(const std::string& root, const std::string& model,
                               const std::string& alias, int64_t version, const Actor& actor) {
  POLIS_RETURN_IF_ERROR(ValidateAliasName(alias));
  return Modify(root, model, actor, [&](AliasTable& t, auto& append) -> Status {
    POLIS_ASSIGN_OR_RETURN(std::vector<int64_t> versions, ListVersions(root, model));
    if (!std::binary_search(versions.begin(), versions.end(), version))
      return NotFound("model '{}' has no version {} (versions: {})", model, version,
                      versions.empty() ? "none" : fmt::format("{}", fmt::join(versions, ", ")));
    auto it = t.aliases.find(alias);
    const int64_t from = it == t.aliases.end() ? 0 : it->second;
    if (from == version) return Status::Ok();
    POLIS_RETURN_IF_ERROR(VerifyTarget(root, model, alias, version, "moved"));
    append("set", alias, from, version);
    return Status::Ok();
  });
}

StatusOr<int64_t> RollbackTarget(const AliasTable& table, const std::string& alias,
                                 const std::vector<int64_t>& existing) {
  std::vector<int64_t> stack;
  for (const auto& e : table.history) {
    if (e.alias != alias) continue;
    if (e.action == "set") {
      stack.push_back(e.to);
    } else if (e.action == "rollback") {
      while (!stack.empty() && stack.back() != e.to) stack.pop_back();
      if (stack.empty()) stack.push_back(e.to);
    } else if (e.action == "remove") {
      stack.clear();
    }
  }
  auto current = table.aliases.find(alias);
  if (current == table.aliases.end())
    return NotFound("alias '{}' is not set", alias);
  // The top of the stack is the current target; look below it.
  for (size_t i = stack.size(); i-- > 0;) {
    const int64_t v = stack[i];
    if (v == current->second) continue;
    if (std::binary_search(existing.begin(), existing.end(), v)) return v;
  }
  return FailedPrecondition(
      "alias '{}' (now version {}) has no earlier target that still exists to roll back to",
      alias, current->second);
}

StatusOr<AliasChange> RollbackAlias(const std::string& root, const std::string& model,
                                    const std::string& alias, const Actor& actor) {
  POLIS_RETURN_IF_ERROR(ValidateAliasName(alias));
  return Modify(root, model, actor, [&](AliasTable& t, auto& append) -> Status {
    POLIS_ASSIGN_OR_RETURN(std::vector<int64_t> versions, ListVersions(root, model));
    auto target = RollbackTarget(t, alias, versions);
    if (!target.ok())
      return target.status().WithContext(fmt::format("rolling back model '{}'", model));
    POLIS_RETURN_IF_ERROR(VerifyTarget(root, model, alias, *target, "rolled back"));
    append("rollback", alias, t.aliases.at(alias), *target);
    return Status::Ok();
  });
}

StatusOr<AliasChange> RemoveAlias(const std::string& root, const std::string& model,
                                  const std::string& alias, const Actor& actor) {
  POLIS_RETURN_IF_ERROR(ValidateAliasName(alias));
  return Modify(root, model, actor, [&](AliasTable& t, auto& append) -> Status {
    auto it = t.aliases.find(alias);
    if (it == t.aliases.end()) return NotFound("model '{}' has no alias '{}'", model, alias);
    append("remove", alias, it->second, 0);
    return Status::Ok();
  });
}

StatusOr<AliasChange> DeleteVersion(const std::string& root, const std::string& model,
                                    int64_t version, bool force, const Actor& actor) {
  return Modify(root, model, actor, [&](AliasTable& t, auto& append) -> Status {
    POLIS_ASSIGN_OR_RETURN(std::vector<int64_t> versions, ListVersions(root, model));
    if (!std::binary_search(versions.begin(), versions.end(), version))
      return NotFound("model '{}' has no version {} (versions: {})", model, version,
                      versions.empty() ? "none" : fmt::format("{}", fmt::join(versions, ", ")));
    std::vector<std::string> pointing;
    for (const auto& [name, v] : t.aliases)
      if (v == version) pointing.push_back(name);
    if (!pointing.empty() && !force)
      return FailedPrecondition(
          "version {} of model '{}' is the target of alias(es) {}; move them first or force the "
          "delete (which removes them)",
          version, model, JoinAliases(pointing));
    const std::string dir = ModelDir(root, model) + "/" + std::to_string(version);
    // The number is never handed out again (PublishVersion reads this).
    POLIS_RETURN_IF_ERROR(RetireVersionNumber(root, model, version));
    // Rename first: the version disappears in one step, then is removed at leisure.
    const std::string trash = ModelDir(root, model) + "/.deleted-" + std::to_string(version) +
                              "-" + std::to_string(getpid()) + "-" +
                              std::to_string(std::random_device{}());
    if (rename(dir.c_str(), trash.c_str()) != 0)
      return ErrnoStatus("cannot move away version directory", dir, errno);
    std::error_code ec;
    std::filesystem::remove_all(trash, ec);
    if (ec) POLIS_LOG(kWarn, kRegistry, "cannot remove '{}': {}", trash, ec.message());
    POLIS_RETURN_IF_ERROR(SyncDirectory(ModelDir(root, model)));
    for (const auto& name : pointing) append("remove", name, version, 0);
    append("delete-version", "", version, 0);
    return Status::Ok();
  });
}

StatusOr<AliasChange> RecordEvent(const std::string& root, const std::string& model,
                                  const std::string& action, int64_t version, const Actor& actor) {
  return Modify(root, model, actor, [&](AliasTable&, auto& append) -> Status {
    append(action, "", 0, version);
    return Status::Ok();
  });
}

StatusOr<PublishedVersion> PublishRecorded(const std::string& root, const std::string& model,
                                           ModelArtifact artifact, const nlohmann::json& extra,
                                           const Actor& actor) {
  POLIS_RETURN_IF_ERROR(ValidateModelName(model));
  POLIS_RETURN_IF_ERROR(MakeDirectories(ModelDir(root, model)));
  PublishedVersion pub;
  bool table_ok = false;
  auto recorded = Modify(root, model, actor, [&](AliasTable&, auto& append) -> Status {
    table_ok = true;  // Modify read (and so checked) aliases.json before this runs
    POLIS_ASSIGN_OR_RETURN(pub, PublishVersion(root, model, std::move(artifact), extra));
    append("publish", "", 0, pub.version);
    return Status::Ok();
  });
  if (!recorded.ok()) {
    if (pub.version > 0)  // published, but the history write failed: say both
      return recorded.status().WithContext(fmt::format(
          "model '{}' version {} was published but its history entry was not written", model,
          pub.version));
    if (!table_ok && recorded.status().code() == Code::kDataLoss)  // the server's file, not the upload
      return FailedPrecondition("publishing model '{}' refused, nothing was written: {}", model,
                                recorded.status().message());
    return recorded.status().WithContext(fmt::format("publishing model '{}'", model));
  }
  return pub;
}

StatusOr<int64_t> ResolveVersionRef(const std::string& model, const std::string& ref,
                                    const std::map<std::string, int64_t>& aliases,
                                    const std::vector<int64_t>& versions) {
  auto list = [&] {
    std::vector<std::string> names;
    for (const auto& [n, v] : aliases) names.push_back(fmt::format("{}={}", n, v));
    return fmt::format("versions: {}; aliases: {}",
                       versions.empty() ? "none" : fmt::format("{}", fmt::join(versions, ", ")),
                       names.empty() ? "none" : fmt::format("{}", fmt::join(names, ", ")));
  };
  if (ref.empty() || ref == kLatest) {
    if (versions.empty()) return NotFound("model '{}' has no versions", model);
    return versions.back();
  }
  if (const int64_t v = ParseVersionNumber(ref); v > 0) {
    if (!std::binary_search(versions.begin(), versions.end(), v))
      return NotFound("model '{}' has no version {} ({})", model, v, list());
    return v;
  }
  if (!ValidateAliasName(ref).ok())
    return InvalidArgument("'{}' is neither a version number nor a valid alias name",
                           EchoValue(ref));
  auto it = aliases.find(ref);
  if (it == aliases.end())
    return NotFound("model '{}' has no version or alias '{}' ({})", model, ref, list());
  if (!std::binary_search(versions.begin(), versions.end(), it->second))
    return NotFound("alias '{}' of model '{}' names version {}, which does not exist ({})", ref,
                    model, it->second, list());
  return it->second;
}

StatusOr<int64_t> ResolveVersionRef(const std::string& root, const std::string& model,
                                    const std::string& ref) {
  POLIS_ASSIGN_OR_RETURN(AliasTable t, ReadAliases(root, model));
  POLIS_ASSIGN_OR_RETURN(std::vector<int64_t> versions, ListVersions(root, model));
  return ResolveVersionRef(model, ref, t.aliases, versions);
}

}  // namespace polis::registry
