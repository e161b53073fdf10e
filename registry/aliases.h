// Aliases of a model's versions ("production" -> 3) and their history, kept
// in <root>/<model>/aliases.json, plus the other writes a registry operator
// makes to a model directory (deleting a version).
//
// aliases.json:
//   {"format": "polis-aliases-1", "model": "m",
//    "aliases": {"production": 3, "staging": 4},
//    "history": [{"seq": 1, "action": "set", "alias": "production", "from": null,
//                 "to": 3, "who": "alice", "when": "2026-...Z", "why": "..."}, ...],
//    "sha256": "<hex SHA-256 of the compact JSON of every other key>"}
//
// The history is append-only: a write keeps every earlier event unchanged and
// adds one or more with the next sequence numbers. Actions: "set" (promote),
// "rollback", "remove" (alias removed), "delete-version" (alias ""),
// "publish" (alias "", recorded by the HTTP publish endpoint).
//
// Every write holds an exclusive flock on <root>/<model>/.lock for its
// read-modify-write, so writers in any thread or process serialise, and
// replaces the file with WriteFileAtomic, so readers (who take no lock) see
// the old table or the new one. Readers verify the checksum.
//
// Alias names: 1..64 characters of [A-Za-z0-9._-] starting with a letter (so
// never a version number); "latest" is reserved (it always means the highest
// version). Thread-safe: no shared state besides the file system.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/artifact/artifact.h"
#include "common/status.h"

namespace polis::registry {

inline constexpr char kAliasesFileName[] = "aliases.json";
inline constexpr char kLockFileName[] = ".lock";
inline constexpr char kLatest[] = "latest";
inline constexpr size_t kMaxAliasLength = 64;

struct AliasEvent {
  int64_t seq = 0;
  std::string action;  // set | rollback | remove | delete-version | publish
  std::string alias;   // "" for model-level events
  int64_t from = 0;    // 0: none
  int64_t to = 0;      // 0: none
  std::string who, when, why;
};

struct AliasTable {
  std::map<std::string, int64_t> aliases;
  std::vector<AliasEvent> history;
};

// Who did it and why, recorded with every event.
struct Actor {
  std::string who;
  std::string why;
};

Status ValidateAliasName(const std::string& alias);

// The table of <root>/<model>; an empty one when the model has no
// aliases.json yet. NotFound if the model does not exist; DataLoss if the
// file fails its checksum or does not parse.
StatusOr<AliasTable> ReadAliases(const std::string& root, const std::string& model);

nlohmann::json AliasEventJson(const AliasEvent& e);
nlohmann::json AliasTableJson(const AliasTable& t);

// Result of a write: the events appended (empty when nothing changed) and
// the table after it.
struct AliasChange {
  std::vector<AliasEvent> events;
  AliasTable table;
  bool changed() const { return !events.empty(); }
};

// Points `alias` at `version`, which must exist and verify (VerifyVersion:
// checksum, finite weights, the model rebuilds; otherwise FailedPrecondition
// naming the file). Setting an alias to the version it already names changes
// nothing and appends no event.
StatusOr<AliasChange> SetAlias(const std::string& root, const std::string& model,
                               const std::string& alias, int64_t version, const Actor& actor);

// Moves `alias` back to its previous target: history is replayed as a stack
// per alias (set pushes, rollback pops, remove clears) and the alias goes to
// the nearest earlier entry that still exists as a version. That version
// must verify, as for SetAlias. FailedPrecondition when there is none.
StatusOr<AliasChange> RollbackAlias(const std::string& root, const std::string& model,
                                    const std::string& alias, const Actor& actor);
// The version RollbackAlias would choose, without writing.
StatusOr<int64_t> RollbackTarget(const AliasTable& table, const std::string& alias,
                                 const std::vector<int64_t>& existing);

StatusOr<AliasChange> RemoveAlias(const std::string& root, const std::string& model,
                                  const std::string& alias, const Actor& actor);

// Deletes <root>/<model>/<version>. Refused (FailedPrecondition, naming the
// aliases) while an alias points at it, unless `force`, which removes those
// aliases first (recorded). The directory is renamed away under the lock and
// then removed, so readers never see half a version.
StatusOr<AliasChange> DeleteVersion(const std::string& root, const std::string& model,
                                    int64_t version, bool force, const Actor& actor);

// Appends a model-level event (e.g. "publish") under the lock.
StatusOr<AliasChange> RecordEvent(const std::string& root, const std::string& model,
                                  const std::string& action, int64_t version, const Actor& actor);

// Publishes `artifact` as the next version (PublishVersion) and appends its
// "publish" event, both under the model's lock, so the history never misses
// a published version. When aliases.json is damaged the publish is refused
// before anything is written (DataLoss naming the file and, for a syntax
// error, the byte offset): the file is left as it is for the operator to
// repair (or to move aside, which starts a new history), because replacing
// it would silently drop every alias, production included. Creates the
// model directory for a new model.
StatusOr<PublishedVersion> PublishRecorded(const std::string& root, const std::string& model,
                                           ModelArtifact artifact, const nlohmann::json& extra,
                                           const Actor& actor);

// "3", "latest" or an alias name to a version number that exists.
// NotFound names what exists.
StatusOr<int64_t> ResolveVersionRef(const std::string& root, const std::string& model,
                                    const std::string& ref);
// The same over already-read state (the server's cached view).
StatusOr<int64_t> ResolveVersionRef(const std::string& model, const std::string& ref,
                                    const std::map<std::string, int64_t>& aliases,
                                    const std::vector<int64_t>& versions);

// "42" -> 42 for canonical positive decimals; 0 otherwise.
int64_t ParseVersionNumber(const std::string& text);

}  // namespace polis::registry
