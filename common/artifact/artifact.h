// Model artifacts: the on-disk format of a trained model, and versioned
// publishing of artifacts into a registry root (ARCHITECTURE.md, "Files on disk").
//
// File layout of model.polis (all integers little-endian):
//
//   offset            size        contents
//   0                 8           magic "POLISMD1"
//   8                 8           uint64 H: length of the serialized header
//   16                8           uint64 W: length of the weights in bytes (a multiple of 4)
//   24                H           serialized polis::proto::ArtifactHeader
//   24+H              W           the flat parameter buffer, raw little-endian float32
//   24+H+W            32          raw SHA-256 of bytes [0, 24+H+W)
//
// The header is protobuf (small, evolvable); the weights are a raw buffer so
// that loading is one copy. A reader trusts nothing it has not checked: the
// magic, that the length fields describe exactly the bytes present, the
// checksum, that the header parses, header.parameter_count() == number of
// floats, and that every weight and every header metric is finite (a NaN or
// infinite model is never published, verified, promoted or served). Every
// refusal is a DataLoss naming the file and the byte offset (for a
// non-finite weight: the tensor and the element).
//
// Registry layout: <root>/<model>/<version>/{model.polis,metadata.json}, where
// version is 1, 2, ... A version directory appears in one rename of a fully
// written and fsynced staging directory <root>/<model>/.staging-<host>-<pid>-<rand>/,
// so readers never see half a version and concurrent publishers (threads or
// processes) never overwrite each other (renameat2 with RENAME_NOREPLACE).
//
// Thread-safety: every function is safe to call from any thread; there is no
// shared state besides the file system.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/proto/artifact.pb.h"
#include "common/status.h"

namespace polis {

struct ModelArtifact {
  proto::ArtifactHeader header;
  std::vector<float> weights;  // the flat parameter buffer
};

inline constexpr char kArtifactMagic[] = "POLISMD1";  // 8 bytes, no terminator in the file
inline constexpr size_t kArtifactPreambleBytes = 24;  // magic + two uint64 lengths
inline constexpr size_t kArtifactChecksumBytes = 32;
inline constexpr char kArtifactFileName[] = "model.polis";
inline constexpr char kMetadataFileName[] = "metadata.json";
inline constexpr size_t kMaxModelNameLength = 128;

// Encodes as given; a header whose parameter_count() differs from
// weights.size() yields bytes that DecodeArtifact refuses.
std::string EncodeArtifact(const ModelArtifact& a);

// The framing itself, shared with checkpoint shards: an 8-byte magic, two
// lengths, a header (opaque bytes), raw float32s and a SHA-256 of it all.
struct FramedFile {
  std::string header;
  std::vector<float> floats;
  size_t header_offset = 0, floats_offset = 0;
};
std::string EncodeFramed(std::string_view magic, std::string_view header,
                         const std::vector<float>& floats);
// `kind` names what was expected in messages ("model artifact").
StatusOr<FramedFile> DecodeFramed(std::string_view bytes, std::string_view magic,
                                  const std::string& kind, const std::string& source);
// `source` names the bytes in error messages (usually the file path).
StatusOr<ModelArtifact> DecodeArtifact(std::string_view bytes, const std::string& source);
// DataLoss naming `source`, the tensor (header.tensor name; the flat index
// when no tensor covers it) and the element of the first NaN or infinite
// weight, or the first non-finite header metric. `weights_offset` is the
// byte offset of the weights in the file (0: not from a file).
Status CheckArtifactFinite(const ModelArtifact& a, const std::string& source,
                           size_t weights_offset = 0);
// Refuses (InvalidArgument) an artifact whose parameter_count() differs from
// weights.size(); writes through WriteFileAtomic (temp name, fsync, rename).
Status WriteArtifactFile(const std::string& path, const ModelArtifact& a);
StatusOr<ModelArtifact> ReadArtifactFile(const std::string& path);
// Lower-case hex of the trailing 32-byte checksum of an encoded artifact (as
// stored, not recomputed); "" if `encoded` is shorter than 32 bytes.
std::string ArtifactSha256(std::string_view encoded);

// Model names: 1..128 characters of [A-Za-z0-9._-], not starting with '.' or
// '-'. Anything else is InvalidArgument naming the offending position.
Status ValidateModelName(const std::string& name);

struct PublishedVersion {
  std::string model;
  int64_t version = 0;        // 1, 2, ...
  std::string dir;            // <root>/<model>/<version>
  std::string artifact_path;  // <dir>/model.polis
  std::string sha256;         // hex, as in metadata.json and the file's trailer
};

// Publishes `artifact` as the next version of `model` under `root`.
//
// 1. Fills header.lineage().created_at with UtcTimestamp() if empty, and
//    header.parameter_count with weights.size() if unset (refuses a set,
//    different one). Refuses (DataLoss, CheckArtifactFinite) a non-finite
//    weight or metric before anything is written.
// 2. Removes staging directories of publishers that died on this host (their
//    pid is gone) or untouched for a day, then writes model.polis into
//    <root>/<model>/.staging-<host>-<pid>-<random>/.
// 3. N = 1 + the highest existing version. Writes metadata.json for version N
//    (keys: model, version, created_at, sha256, parameter_count, artifact,
//    artifact_bytes, metrics {name: value}, lineage {...}, plus every key of
//    `extra`, which must be an object or null and may not reuse those keys).
//    Both files and the staging directory are fsynced.
// 4. renameat2(staging, <root>/<model>/<N>, RENAME_NOREPLACE). If N was taken
//    meanwhile, goes back to 3 with a larger N. (Where the file system lacks
//    RENAME_NOREPLACE, plain rename() is used: it also refuses to replace a
//    non-empty directory, and version directories are never empty.)
// 5. fsyncs <root>/<model> (and <root>), so the new version survives a crash.
// On failure the staging directory is removed.
StatusOr<PublishedVersion> PublishVersion(const std::string& root, const std::string& model,
                                          ModelArtifact artifact, const nlohmann::json& extra);

// Version numbers are never reused: deleting a version first records it in
// <root>/<model>/.retired_versions (the highest deleted number, written
// atomically), and PublishVersion numbers past it. 0 when none was deleted;
// DataLoss naming the file if it is not a number.
inline constexpr char kRetiredVersionsFileName[] = ".retired_versions";
StatusOr<int64_t> HighestRetiredVersion(const std::string& root, const std::string& model);
Status RetireVersionNumber(const std::string& root, const std::string& model, int64_t version);

// Numeric version directories of <root>/<model>, ascending. Staging
// directories and other names (including non-canonical numbers such as "007")
// are ignored. NotFound if the model directory does not exist.
StatusOr<std::vector<int64_t>> ListVersions(const std::string& root, const std::string& model);

// Reads <root>/<model>/<version>/model.polis; version 0 means the latest.
// NotFound (listing the existing versions) if there is no such version.
StatusOr<ModelArtifact> LoadVersion(const std::string& root, const std::string& model,
                                    int64_t version);

}  // namespace polis
