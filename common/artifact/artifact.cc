#include "common/artifact/artifact.h"
#include "common/artifact/artifact_json.h"

#include <fcntl.h>
#include <fmt/ranges.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "common/fs.h"

namespace polis {
namespace {

constexpr size_t kMagicBytes = 8;

void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetU64(std::string_view bytes, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<unsigned char>(bytes[at + i])} << (8 * i);
  return v;
}

std::string HexToBytes(const std::string& hex) {
  auto nibble = [](char c) -> int { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = static_cast<char>((nibble(hex[2 * i]) << 4) | nibble(hex[2 * i + 1]));
  return out;
}

std::string BytesToHex(std::string_view bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

// Printable form of untrusted bytes for messages: "POLISMD1" or "\x00\x7f...".
std::string Printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out;
}

void AppendFloatsLe(std::string& out, const std::vector<float>& w) {
  size_t at = out.size();
  out.resize(at + w.size() * sizeof(float));
  if constexpr (std::endian::native == std::endian::little) {
    if (!w.empty()) std::memcpy(out.data() + at, w.data(), w.size() * sizeof(float));
  } else {
    for (size_t i = 0; i < w.size(); ++i) {
      uint32_t u = std::bit_cast<uint32_t>(w[i]);
      for (int b = 0; b < 4; ++b) out[at + 4 * i + b] = static_cast<char>((u >> (8 * b)) & 0xff);
    }
  }
}

void ReadFloatsLe(std::string_view bytes, std::vector<float>& w) {
  if constexpr (std::endian::native == std::endian::little) {
    if (!w.empty()) std::memcpy(w.data(), bytes.data(), w.size() * sizeof(float));
  } else {
    for (size_t i = 0; i < w.size(); ++i) {
      uint32_t u = 0;
      for (int b = 0; b < 4; ++b)
        u |= uint32_t{static_cast<unsigned char>(bytes[4 * i + b])} << (8 * b);
      w[i] = std::bit_cast<float>(u);
    }
  }
}

std::string JoinPath(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (a.back() == '/') return a + b;
  return a + "/" + b;
}

// "1", "42": canonical positive decimal that fits in int64; -1 otherwise.
int64_t ParseVersionName(const std::string& name) {
  if (name.empty() || name.size() > 18 || name[0] == '0') return -1;
  int64_t v = 0;
  for (char c : name) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

// This host's name, without characters that would split a staging name.
std::string HostTag() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "host";
  std::string tag(name);
  for (char& c : tag)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.') c = '_';
  return tag;
}

// Staging directories left by publishers that died (a kill during a
// publish): .staging-<host>-<pid>-<rand> of this host whose process is gone,
// or any staging directory untouched for a day (another host's, or one of
// the older .staging-<pid>-<rand> form). Best effort; never a version.
void RemoveAbandonedStaging(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string mine = ".staging-" + HostTag() + "-";
  const auto now = fs::file_time_type::clock::now();
  for (const auto& e : fs::directory_iterator(model_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".staging-", 0) != 0) continue;
    bool abandoned = false;
    if (name.rfind(mine, 0) == 0) {
      const long pid = std::strtol(name.c_str() + mine.size(), nullptr, 10);
      abandoned = pid > 0 && kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
    }
    const auto mtime = fs::last_write_time(e.path(), ec);
    if (!ec && now - mtime > std::chrono::hours(24)) abandoned = true;
    if (abandoned) fs::remove_all(e.path(), ec);
  }
}

std::string RandomHex() {
  thread_local std::mt19937_64 rng([] {
    std::random_device rd;
    return (uint64_t{rd()} << 32) ^ rd();
  }());
  return fmt::format("{:016x}", rng());
}

int RenameNoReplace(const std::string& from, const std::string& to) {
#ifdef RENAME_NOREPLACE
  int rc = renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE);
#else
  int rc = static_cast<int>(
      syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), 1u /*NOREPLACE*/));
#endif
  if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) {
    // No RENAME_NOREPLACE here. rename() of a directory onto a non-empty one
    // fails with ENOTEMPTY/EEXIST, and version directories are never empty.
    rc = rename(from.c_str(), to.c_str());
  }
  return rc;
}

nlohmann::json MetadataJson(const std::string& model, int64_t version, const std::string& sha256,
                            size_t artifact_bytes, const proto::ArtifactHeader& h) {
  nlohmann::json metrics = nlohmann::json::object();
  for (const auto& m : h.metric()) metrics[m.name()] = m.value();
  nlohmann::json meta{
      {"model", model},
      {"version", version},
      {"created_at", h.lineage().created_at()},
      {"sha256", sha256},
      {"parameter_count", h.parameter_count()},
      {"artifact", kArtifactFileName},
      {"artifact_bytes", artifact_bytes},
      {"metrics", metrics},
      {"lineage", LineageJson(h.lineage())},
  };
  if (h.has_privacy()) meta["privacy"] = PrivacyJson(h.privacy());  // DP-SGD models only
  return meta;
}

std::string JoinVersions(const std::vector<int64_t>& v) {
  if (v.empty()) return "none";
  return fmt::format("{}", fmt::join(v, ", "));
}

}  // namespace

nlohmann::json LineageJson(const proto::Lineage& l) {
  nlohmann::json datasets = nlohmann::json::array();
  for (const auto& f : l.dataset_files())
    datasets.push_back({{"path", f.path()}, {"sha256", f.sha256()}});
  nlohmann::json lineage = {
      {"job_file", l.job_file()},  {"job_sha256", l.job_sha256()},
      {"dataset_files", datasets}, {"source_revision", l.source_revision()},
      {"run_dir", l.run_dir()},    {"created_at", l.created_at()},
      {"host", l.host()},
  };
  if (l.has_study()) {
    const proto::StudyLineage& st = l.study();
    nlohmann::json params = nlohmann::json::object();
    for (const auto& p : st.param()) params[p.field()] = p.value();
    lineage["study"] = {{"study", st.study()},         {"study_dir", st.study_dir()},
                        {"study_sha256", st.study_sha256()}, {"trial", st.trial()},
                        {"params", params},           {"objective", st.objective()},
                        {"objective_value", st.objective_value()}};
  }
  return lineage;
}

nlohmann::json PrivacyJson(const proto::PrivacyRecord& p) {
  nlohmann::json privacy = {{"epsilon", p.epsilon()},
                            {"delta", p.delta()},
                            {"max_grad_norm", p.max_grad_norm()},
                            {"noise_multiplier", p.noise_multiplier()},
                            {"sample_rate", p.sample_rate()},
                            {"steps", p.steps()},
                            {"sampler", p.sampler()},
                            {"accountant", p.accountant()},
                            {"secure_aggregation", p.secure_aggregation()}};
  if (p.has_target_epsilon()) privacy["target_epsilon"] = p.target_epsilon();
  return privacy;
}

std::string EncodeFramed(std::string_view magic, std::string_view header,
                         const std::vector<float>& floats) {
  POLIS_ENFORCE_EQ(magic.size(), kMagicBytes);
  const uint64_t weight_bytes = uint64_t{floats.size()} * sizeof(float);
  std::string out;
  out.reserve(kArtifactPreambleBytes + header.size() + weight_bytes + kArtifactChecksumBytes);
  out.append(magic.data(), kMagicBytes);
  PutU64(out, header.size());
  PutU64(out, weight_bytes);
  out += header;
  AppendFloatsLe(out, floats);
  out += HexToBytes(Sha256Hex(out));
  return out;
}

std::string EncodeArtifact(const ModelArtifact& a) {
  std::string header;
  POLIS_ENFORCE(a.header.SerializeToString(&header));
  return EncodeFramed(std::string_view(kArtifactMagic, kMagicBytes), header, a.weights);
}

StatusOr<FramedFile> DecodeFramed(std::string_view bytes, std::string_view magic,
                                  const std::string& kind, const std::string& source) {
  const std::string expected_magic(magic);
  const size_t size = bytes.size();
  // Magic: compare what is there first, so a short non-artifact is called that.
  const size_t magic_have = std::min(size, kMagicBytes);
  for (size_t i = 0; i < magic_have; ++i) {
    if (bytes[i] != expected_magic[i]) {
      return DataLoss(
          "'{}': not a Polis model artifact: bad magic at byte offset {} (expected \"{}\", found "
          "\"{}\")",
          source, i, kArtifactMagic, Printable(bytes.substr(0, magic_have)));
    }
  }
  if (size < kArtifactPreambleBytes + kArtifactChecksumBytes) {
    return DataLoss(
        "'{}': truncated at byte offset {}: a framed file has at least {} bytes (24-byte preamble + "
        "32-byte checksum)",
        source, size, kArtifactPreambleBytes + kArtifactChecksumBytes);
  }
  const uint64_t header_len = GetU64(bytes, 8);
  const uint64_t weight_len = GetU64(bytes, 16);
  if (header_len > size) {
    return DataLoss("'{}': header length {} (field at byte offset 8) exceeds the file size {}",
                    source, header_len, size);
  }
  if (weight_len > size) {
    return DataLoss("'{}': weights length {} (field at byte offset 16) exceeds the file size {}",
                    source, weight_len, size);
  }
  if (weight_len % sizeof(float) != 0) {
    return DataLoss(
        "'{}': weights length {} (field at byte offset 16) is not a multiple of 4 (float32)",
        source, weight_len);
  }
  // Both lengths are <= size, so this sum cannot overflow.
  const uint64_t expected =
      kArtifactPreambleBytes + header_len + weight_len + kArtifactChecksumBytes;
  if (size < expected) {
    return DataLoss(
        "'{}': truncated at byte offset {}: the length fields promise {} bytes (24 preamble + {} "
        "header + {} weights + 32 checksum), {} are missing",
        source, size, expected, header_len, weight_len, expected - size);
  }
  if (size > expected) {
    return DataLoss(
        "'{}': {} unexpected trailing bytes after byte offset {} (the length fields promise {} "
        "bytes: {} header + {} weights)",
        source, size - expected, expected, expected, header_len, weight_len);
  }
  const size_t checksum_at = size - kArtifactChecksumBytes;
  const std::string stored = BytesToHex(bytes.substr(checksum_at));
  const std::string computed = Sha256Hex(bytes.substr(0, checksum_at));
  if (stored != computed) {
    return DataLoss(
        "'{}': checksum mismatch: stored {}, computed {} (checksum at byte offset {} over bytes "
        "[0, {}))",
        source, stored, computed, checksum_at, checksum_at);
  }

  FramedFile f;
  const size_t header_at = kArtifactPreambleBytes;
  f.header.assign(bytes.data() + header_at, header_len);
  f.header_offset = header_at;
  f.floats_offset = header_at + header_len;
  f.floats.resize(weight_len / sizeof(float));
  ReadFloatsLe(bytes.substr(f.floats_offset, weight_len), f.floats);
  return f;
}

StatusOr<ModelArtifact> DecodeArtifact(std::string_view bytes, const std::string& source) {
  POLIS_ASSIGN_OR_RETURN(FramedFile f, DecodeFramed(bytes, std::string_view(kArtifactMagic, kMagicBytes),
                                                    "model artifact", source));
  ModelArtifact a;
  if (!a.header.ParseFromString(f.header)) {
    return DataLoss(
        "'{}': the header at byte offset {} ({} bytes) does not parse as ArtifactHeader", source,
        f.header_offset, f.header.size());
  }
  const uint64_t count = f.floats.size();
  if (a.header.parameter_count() < 0 ||
      static_cast<uint64_t>(a.header.parameter_count()) != count) {
    return DataLoss(
        "'{}': header parameter_count is {} but the weights at byte offset {} hold {} floats "
        "({} bytes)",
        source, a.header.parameter_count(), f.floats_offset, count, count * sizeof(float));
  }
  a.weights = std::move(f.floats);
  POLIS_RETURN_IF_ERROR(CheckArtifactFinite(a, source, f.floats_offset));
  return a;
}

Status CheckArtifactFinite(const ModelArtifact& a, const std::string& source,
                           size_t weights_offset) {
  constexpr char kWhy[] = "the model is not finite and cannot be published or served";
  auto name = [](double v) { return std::isnan(v) ? "nan" : v > 0 ? "inf" : "-inf"; };
  for (const auto& m : a.header.metric()) {
    if (!std::isfinite(m.value()))
      return DataLoss("'{}': header metric '{}' is {}: {}", source, Printable(m.name()),
                      name(m.value()), kWhy);
  }
  const std::vector<float>& w = a.weights;
  size_t bad = w.size();
  for (size_t i = 0; i < w.size(); ++i) {
    // Exponent bits all ones: NaN or infinity (independent of -ffast-math).
    if ((std::bit_cast<uint32_t>(w[i]) & 0x7f800000u) == 0x7f800000u) {
      bad = i;
      break;
    }
  }
  if (bad == w.size()) return Status::Ok();
  const int64_t at = static_cast<int64_t>(bad);
  std::string where = fmt::format("weight {} of the flat buffer (no header tensor covers it)", at);
  for (const auto& t : a.header.tensor()) {
    // offset and count come from the file: at - offset only once offset is
    // known to be in [0, at], so no value of them overflows.
    if (t.offset() >= 0 && at >= t.offset() && at - t.offset() < t.count()) {
      where = fmt::format("tensor '{}' element {}", Printable(t.name()), at - t.offset());
      break;
    }
  }
  const std::string offset =
      weights_offset > 0 ? fmt::format(", byte offset {}", weights_offset + 4 * bad) : "";
  return DataLoss("'{}': {} is {}: {} (weight {} of {}{})", source, where, name(w[bad]), kWhy,
                  at, w.size(), offset);
}

Status WriteArtifactFile(const std::string& path, const ModelArtifact& a) {
  if (a.header.parameter_count() < 0 ||
      static_cast<uint64_t>(a.header.parameter_count()) != a.weights.size()) {
    return InvalidArgument(
        "cannot write artifact '{}': header parameter_count is {} but there are {} weights", path,
        a.header.parameter_count(), a.weights.size());
  }
  return WriteFileAtomic(path, EncodeArtifact(a));
}

StatusOr<ModelArtifact> ReadArtifactFile(const std::string& path) {
  POLIS_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return DecodeArtifact(bytes, path);
}

std::string ArtifactSha256(std::string_view encoded) {
  if (encoded.size() < kArtifactChecksumBytes) return "";
  return BytesToHex(encoded.substr(encoded.size() - kArtifactChecksumBytes));
}

Status ValidateModelName(const std::string& name) {
  if (name.empty())
    return InvalidArgument("model name is empty; expected 1..{} characters of [A-Za-z0-9._-]",
                           kMaxModelNameLength);
  if (name.size() > kMaxModelNameLength) {
    return InvalidArgument(
        "model name '{}...' is {} characters long; at most {} are allowed (position {} is too far)",
        Printable(std::string_view(name).substr(0, 32)), name.size(), kMaxModelNameLength,
        kMaxModelNameLength);
  }
  if (name[0] == '.' || name[0] == '-') {
    return InvalidArgument(
        "model name '{}' starts with '{}' at position 0; names may not start with '.' or '-'",
        Printable(name), name[0]);
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return InvalidArgument(
          "model name '{}' has character '{}' at position {}; allowed are [A-Za-z0-9._-]",
          Printable(name), Printable(std::string_view(&name[i], 1)), i);
    }
  }
  return Status::Ok();
}

StatusOr<std::vector<int64_t>> ListVersions(const std::string& root, const std::string& model) {
  POLIS_RETURN_IF_ERROR(ValidateModelName(model));
  const std::string model_dir = JoinPath(root, model);
  std::error_code ec;
  std::filesystem::directory_iterator it(model_dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) {
      return NotFound("model '{}' is not in the registry: no directory '{}'", model, model_dir);
    }
    return IoError("cannot list '{}': {}", model_dir, ec.message());
  }
  std::vector<int64_t> versions;
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const int64_t v = ParseVersionName(it->path().filename().string());
    if (v <= 0) continue;
    std::error_code dir_ec;
    if (!it->is_directory(dir_ec)) continue;
    versions.push_back(v);
  }
  if (ec) return IoError("cannot list '{}': {}", model_dir, ec.message());
  std::sort(versions.begin(), versions.end());
  return versions;
}

StatusOr<int64_t> HighestRetiredVersion(const std::string& root, const std::string& model) {
  const std::string path = JoinPath(JoinPath(root, model), kRetiredVersionsFileName);
  if (!PathExists(path)) return int64_t{0};
  POLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  const int64_t v = ParseVersionName(text);
  if (v <= 0)
    return DataLoss("'{}' should hold the highest deleted version number, found '{}'", path,
                    text.substr(0, 40));
  return v;
}

Status RetireVersionNumber(const std::string& root, const std::string& model, int64_t version) {
  POLIS_ASSIGN_OR_RETURN(int64_t high, HighestRetiredVersion(root, model));
  if (version <= high) return Status::Ok();
  return WriteFileAtomic(JoinPath(JoinPath(root, model), kRetiredVersionsFileName),
                         std::to_string(version) + "\n");
}

StatusOr<ModelArtifact> LoadVersion(const std::string& root, const std::string& model,
                                    int64_t version) {
  if (version < 0)
    return InvalidArgument("version {} of model '{}' is negative (0 means latest)", version, model);
  POLIS_ASSIGN_OR_RETURN(std::vector<int64_t> versions, ListVersions(root, model));
  if (version == 0) {
    if (versions.empty()) return NotFound("model '{}' under '{}' has no versions yet", model, root);
    version = versions.back();
  } else if (!std::binary_search(versions.begin(), versions.end(), version)) {
    return NotFound("model '{}' under '{}' has no version {} (versions: {})", model, root, version,
                    JoinVersions(versions));
  }
  return ReadArtifactFile(
      JoinPath(JoinPath(JoinPath(root, model), std::to_string(version)), kArtifactFileName));
}

StatusOr<PublishedVersion> PublishVersion(const std::string& root, const std::string& model,
                                          ModelArtifact artifact, const nlohmann::json& extra) {
  POLIS_RETURN_IF_ERROR(ValidateModelName(model));
  if (!extra.is_null() && !extra.is_object()) {
    return InvalidArgument("publishing '{}': extra metadata must be a JSON object, got {}", model,
                           extra.type_name());
  }
  proto::ArtifactHeader& h = artifact.header;
  if (!h.has_parameter_count())
    h.set_parameter_count(static_cast<int64_t>(artifact.weights.size()));
  if (h.parameter_count() < 0 ||
      static_cast<uint64_t>(h.parameter_count()) != artifact.weights.size()) {
    return InvalidArgument("publishing '{}': header parameter_count is {} but there are {} weights",
                           model, h.parameter_count(), artifact.weights.size());
  }
  POLIS_RETURN_IF_ERROR(CheckArtifactFinite(artifact, model)
                            .WithContext(fmt::format("publishing model '{}'", model)));
  if (h.lineage().created_at().empty()) h.mutable_lineage()->set_created_at(UtcTimestamp());

  const std::string encoded = EncodeArtifact(artifact);
  const std::string sha256 = ArtifactSha256(encoded);
  nlohmann::json meta_base = MetadataJson(model, 0, sha256, encoded.size(), h);
  if (extra.is_object()) {
    for (const auto& [key, value] : extra.items()) {
      if (meta_base.contains(key)) {
        return InvalidArgument("publishing '{}': extra metadata key '{}' is reserved", model, key);
      }
      meta_base[key] = value;
    }
  }

  const std::string model_dir = JoinPath(root, model);
  POLIS_RETURN_IF_ERROR(MakeDirectories(model_dir));

  RemoveAbandonedStaging(model_dir);
  // A fresh staging directory; the random part keeps threads of one process apart.
  std::string staging;
  for (int attempt = 0;; ++attempt) {
    staging = JoinPath(model_dir, fmt::format(".staging-{}-{}-{}", HostTag(), getpid(), RandomHex()));
    if (mkdir(staging.c_str(), 0755) == 0) break;
    if (errno != EEXIST || attempt >= 16)
      return ErrnoStatus("cannot create directory", staging, errno);
  }
  auto fail = [&](Status st) -> Status {
    std::error_code ec;
    std::filesystem::remove_all(staging, ec);
    return st.WithContext(fmt::format("publishing model '{}'", model));
  };

  Status st = WriteFileAtomic(JoinPath(staging, kArtifactFileName), encoded);
  if (!st.ok()) return fail(st);

  int64_t next = 0;
  std::string target;
  while (true) {
    auto versions = ListVersions(root, model);
    if (!versions.ok()) return fail(versions.status());
    // Read after listing: a delete records the number before removing it.
    auto retired = HighestRetiredVersion(root, model);
    if (!retired.ok()) return fail(retired.status());
    next = std::max({next + 1, versions->empty() ? int64_t{1} : versions->back() + 1,
                     *retired + 1});
    meta_base["version"] = next;
    st = WriteFileAtomic(JoinPath(staging, kMetadataFileName), meta_base.dump(2) + "\n");
    if (!st.ok()) return fail(st);
    // WriteFileAtomic fsynced each file and the staging directory after its rename.
    target = JoinPath(model_dir, std::to_string(next));
    if (RenameNoReplace(staging, target) == 0) break;
    const int err = errno;
    if (err != EEXIST && err != ENOTEMPTY)
      return fail(ErrnoStatus("cannot rename staging directory to", target, err));
    // Another publisher took `next`; try a larger one.
  }
  POLIS_RETURN_IF_ERROR(
      SyncDirectory(model_dir).WithContext(fmt::format("publishing model '{}'", model)));
  POLIS_RETURN_IF_ERROR(SyncDirectory(root.empty() ? "." : root));

  PublishedVersion out;
  out.model = model;
  out.version = next;
  out.dir = target;
  out.artifact_path = JoinPath(target, kArtifactFileName);
  out.sha256 = sha256;
  return out;
}

}  // namespace polis
