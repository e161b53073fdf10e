#include "common/data/shard_format.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <fmt/ranges.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/fs.h"

namespace polis::data {
namespace {

using nlohmann::json;

std::string EncodingName(ImageEncoding e) { return EncodingExtension(e); }

StatusOr<ImageEncoding> ParseEncoding(const std::string& s, const std::string& file) {
  if (s == "png") return ImageEncoding::kPng;
  if (s == "jpg") return ImageEncoding::kJpeg;
  if (s == "npy") return ImageEncoding::kNpy;
  return DataLoss("'{}': encoding \"{}\"; expected \"png\", \"jpg\" or \"npy\"", file, s);
}

uint32_t Crc32(std::string_view b) {
  return static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(b.data()), static_cast<uInt>(b.size())));
}

int64_t Padded(int64_t n) { return (n + kTarBlock - 1) / kTarBlock * kTarBlock; }

json PartJson(const std::vector<ShardFileInfo>& shards) {
  json arr = json::array();
  int64_t n = 0;
  for (const auto& s : shards) {
    arr.push_back({{"tar", s.tar}, {"index", s.index}, {"records", s.records}, {"tar_bytes", s.tar_bytes},
                   {"index_sha256", s.index_sha256}});
    n += s.records;
  }
  return {{"records", n}, {"shards", arr}};
}

// A path component written by our packer: no separators, no "..".
bool PlainName(const std::string& s) {
  return !s.empty() && s.find('/') == std::string::npos && s != "." && s != "..";
}

Status ParsePart(const json& j, const std::string& file, const char* part, std::vector<ShardFileInfo>* out) {
  if (!j.contains("parts") || !j["parts"].contains(part)) return Status::Ok();
  const json& p = j["parts"][part];
  if (!p.contains("shards") || !p["shards"].is_array())
    return DataLoss("'{}': parts.{}.shards is missing or not a list", file, part);
  for (const json& s : p["shards"]) {
    ShardFileInfo f;
    try {
      f.tar = s.at("tar").get<std::string>();
      f.index = s.at("index").get<std::string>();
      f.records = s.at("records").get<int64_t>();
      f.tar_bytes = s.at("tar_bytes").get<int64_t>();
      f.index_sha256 = s.at("index_sha256").get<std::string>();
    } catch (const json::exception& e) {
      return DataLoss("'{}': parts.{}.shards[{}]: {}", file, part, out->size(), e.what());
    }
    if (!PlainName(f.tar) || !PlainName(f.index))
      return DataLoss("'{}': parts.{}.shards[{}] names '{}' / '{}'; expected plain file names", file, part,
                      out->size(), f.tar, f.index);
    out->push_back(std::move(f));
  }
  return Status::Ok();
}

// Octal field of a tar header, as written by TarHeader.
int64_t OctalField(const char* p, int n) {
  int64_t v = 0;
  for (int i = 0; i < n && p[i] >= '0' && p[i] <= '7'; ++i) v = v * 8 + (p[i] - '0');
  return v;
}

Status PreadAll(int fd, const std::string& path, char* buf, int64_t n, int64_t offset) {
  int64_t got = 0;
  while (got < n) {
    const ssize_t r = ::pread(fd, buf + got, static_cast<size_t>(n - got), offset + got);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read", path, errno);
    }
    if (r == 0)
      return DataLoss("'{}' is truncated: it ends at byte {}, but the record at offset {} needs {} bytes", path,
                      offset + got, offset, n);
    got += r;
  }
  return Status::Ok();
}


Status ParseImages(const json& j, const std::string& file, ShardManifest* m) {
  try {
    m->channels = j.at("channels").get<int>();
    m->height = j.at("height").get<int>();
    m->width = j.at("width").get<int>();
    m->classes = j.at("classes").get<std::vector<std::string>>();
    m->source = j.value("source", "");
    m->report = j.value("report", "");
    POLIS_ASSIGN_OR_RETURN(m->encoding, ParseEncoding(j.at("encoding").get<std::string>(), file));
  } catch (const json::exception& e) {
    return DataLoss("'{}': {}", file, e.what());
  }
  if ((m->channels != 1 && m->channels != 3) || m->height < 1 || m->width < 1 || m->height > 65535 || m->width > 65535)
    return DataLoss("'{}': shape {}x{}x{} (channels x height x width); expected 1 or 3 channels", file, m->channels,
                    m->height, m->width);
  if (m->classes.size() < 2) return DataLoss("'{}': {} classes; expected at least 2", file, m->classes.size());
  return Status::Ok();
}

Status ParseTimeSeries(const json& j, const std::string& file, ShardManifest* m) {
  try {
    m->lookback = j.at("lookback").get<int64_t>();
    m->horizon = j.at("horizon").get<int64_t>();
    m->features = j.at("features").get<std::vector<std::string>>();
    m->timeseries_spec = j.at("timeseries_spec").get<std::string>();
    m->preprocessing = j.at("preprocessing").dump();
    m->baselines = j.at("baselines").dump();
    m->source = j.value("source", "");
    m->report = j.value("report", "");
  } catch (const json::exception& e) {
    return DataLoss("'{}': {}", file, e.what());
  }
  m->encoding = ImageEncoding::kNpy;
  if (m->lookback < 1 || m->horizon < 1 || m->features.empty() || m->lookback > (1 << 20) ||
      m->horizon > (1 << 20) || m->features.size() > (1 << 20))
    return DataLoss("'{}': lookback {}, horizon {}, {} features; expected each at least 1", file, m->lookback,
                    m->horizon, m->features.size());
  return Status::Ok();
}

}  // namespace

int64_t ShardManifest::records(bool test_part) const { return records(test_part ? test : train); }

int64_t ShardManifest::records(const std::vector<ShardFileInfo>& part) const {
  int64_t n = 0;
  for (const auto& s : part) n += s.records;
  return n;
}

std::string MemberName(int64_t key, const char* ext) { return fmt::format("{:09d}.{}", key, ext); }

std::string TarHeader(const std::string& name, int64_t size) {
  POLIS_ENFORCE_LT(name.size(), size_t{100});
  std::string h(kTarBlock, '\0');
  std::memcpy(&h[0], name.data(), name.size());
  auto octal = [&](int at, int width, int64_t v) {
    const std::string s = fmt::format("{:0{}o}", v, width - 1);  // NUL-terminated
    std::memcpy(&h[at], s.data(), s.size());
  };
  octal(100, 8, 0644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, size);
  octal(136, 12, 0);
  h[156] = '0';
  std::memcpy(&h[257], "ustar", 6);  // magic "ustar\0", version "00"
  std::memcpy(&h[263], "00", 2);
  std::memcpy(&h[265], "root", 4);
  std::memcpy(&h[297], "root", 4);
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (char c : h) sum += static_cast<unsigned char>(c);
  const std::string s = fmt::format("{:06o}", sum);
  std::memcpy(&h[148], s.data(), 6);
  h[154] = '\0';
  h[155] = ' ';
  return h;
}

StatusOr<ShardManifest> ReadManifest(const std::string& dir) {
  const std::string file = dir + "/" + kManifestName;
  if (!PathExists(file))
    return NotFound("'{}' is missing: '{}' is not a dataset written by polis-data pack, or its pack did not finish",
                    file, dir);
  POLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(file));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return DataLoss("'{}' is not valid JSON", file);
  if (j.value("format", "") != "polis-shards")
    return DataLoss("'{}': format is \"{}\"; expected \"polis-shards\"", file, j.value("format", ""));
  if (j.value("version", 0) != 1) return DataLoss("'{}': version {}; this build reads version 1", file, j.value("version", 0));
  ShardManifest m;
  m.kind = j.value("kind", "images");
  if (m.timeseries()) {
    POLIS_RETURN_IF_ERROR(ParseTimeSeries(j, file, &m));
  } else if (m.kind == "images") {
    POLIS_RETURN_IF_ERROR(ParseImages(j, file, &m));
  } else {
    return DataLoss("'{}': kind \"{}\"; expected \"images\" or \"timeseries\"", file, m.kind);
  }
  POLIS_RETURN_IF_ERROR(ParsePart(j, file, "train", &m.train));
  POLIS_RETURN_IF_ERROR(ParsePart(j, file, "validation", &m.validation));
  POLIS_RETURN_IF_ERROR(ParsePart(j, file, "test", &m.test));
  return m;
}

Status WriteManifest(const std::string& dir, const ShardManifest& m) {
  json j = {{"format", "polis-shards"}, {"version", 1}, {"kind", m.kind}, {"source", m.source}};
  if (!m.report.empty()) j["report"] = m.report;
  if (m.timeseries()) {
    j["lookback"] = m.lookback;
    j["horizon"] = m.horizon;
    j["features"] = m.features;
    j["timeseries_spec"] = m.timeseries_spec;
    j["preprocessing"] = json::parse(m.preprocessing);
    j["baselines"] = json::parse(m.baselines);
    j["parts"] = {{"train", PartJson(m.train)}, {"validation", PartJson(m.validation)}, {"test", PartJson(m.test)}};
  } else {
    j.update({{"channels", m.channels}, {"height", m.height}, {"width", m.width},
              {"encoding", EncodingName(m.encoding)}, {"classes", m.classes},
              {"parts", {{"train", PartJson(m.train)}, {"test", PartJson(m.test)}}}});
  }
  return WriteFileAtomic(dir + "/" + kManifestName, j.dump(1) + "\n");
}

StatusOr<ShardIndex> ReadShardIndex(const std::string& dir, const ShardFileInfo& f) {
  const std::string file = dir + "/" + f.index;
  POLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(file));
  if (Sha256Hex(text) != f.index_sha256)
    return DataLoss("'{}': SHA-256 {} but {} says {}: the index was changed or damaged after packing", file,
                    Sha256Hex(text), kManifestName, f.index_sha256);
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("format", "") != "polis-shard-index")
    return DataLoss("'{}' is not a polis shard index", file);
  ShardIndex ix;
  try {
    ix.tar = j.at("tar").get<std::string>();
    ix.tar_bytes = j.at("tar_bytes").get<int64_t>();
    POLIS_ASSIGN_OR_RETURN(ix.encoding, ParseEncoding(j.at("encoding").get<std::string>(), file));
    ix.windows = j.value("kind", "images") == "timeseries";
    const json& recs = j.at("records");
    ix.records.reserve(recs.size());
    for (const json& r : recs) {
      ShardRecord rec;
      rec.key = r.at(0).get<int64_t>();
      rec.label = r.at(1).get<int32_t>();
      rec.offset = r.at(2).get<int64_t>();
      rec.size = r.at(3).get<uint32_t>();
      rec.crc32 = r.at(4).get<uint32_t>();
      if (ix.windows) rec.target_at = r.at(5).get<uint32_t>();
      ix.records.push_back(rec);
    }
    if (j.contains("sources")) ix.sources = j["sources"].get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    return DataLoss("'{}': {}", file, e.what());
  }
  if (ix.tar != f.tar) return DataLoss("'{}' indexes '{}' but {} pairs it with '{}'", file, ix.tar, kManifestName, f.tar);
  if (static_cast<int64_t>(ix.records.size()) != f.records)
    return DataLoss("'{}' holds {} records but {} says {}", file, ix.records.size(), kManifestName, f.records);
  return ix;
}

ShardWriter::ShardWriter(std::string dir, std::string part, int64_t records_per_shard, ImageEncoding encoding)
    : dir_(std::move(dir)), part_(std::move(part)), per_shard_(records_per_shard), encoding_(encoding) {}

ShardWriter::ShardWriter(std::string dir, std::string part, int64_t records_per_shard)
    : ShardWriter(std::move(dir), std::move(part), records_per_shard, ImageEncoding::kNpy) {
  windows_ = true;
}

ShardWriter::~ShardWriter() {
  if (f_ != nullptr) {
    std::fclose(f_);
    ::unlink(tmp_path_.c_str());
  }
}

Status ShardWriter::Write(const void* p, size_t n) {
  if (std::fwrite(p, 1, n, f_) != n) return ErrnoStatus("write", tmp_path_, errno);
  offset_ += static_cast<int64_t>(n);
  return Status::Ok();
}

Status ShardWriter::WriteMember(const std::string& name, const std::string& bytes) {
  const std::string h = TarHeader(name, static_cast<int64_t>(bytes.size()));
  POLIS_RETURN_IF_ERROR(Write(h.data(), h.size()));
  POLIS_RETURN_IF_ERROR(Write(bytes.data(), bytes.size()));
  static const char kZeros[kTarBlock] = {};
  return Write(kZeros, static_cast<size_t>(Padded(static_cast<int64_t>(bytes.size())) - static_cast<int64_t>(bytes.size())));
}

Status ShardWriter::Open() {
  index_ = ShardIndex{};
  index_.tar = fmt::format("{}-{:06d}.tar", part_, done_.size());
  index_.encoding = encoding_;
  index_.windows = windows_;
  tmp_path_ = fmt::format("{}/{}.tmp-{}", dir_, index_.tar, getpid());
  f_ = std::fopen(tmp_path_.c_str(), "wb");
  if (f_ == nullptr) return ErrnoStatus("create", tmp_path_, errno);
  offset_ = 0;
  return Status::Ok();
}

Status ShardWriter::Add(int32_t label, const std::string& image, const std::string& source) {
  if (f_ == nullptr) POLIS_RETURN_IF_ERROR(Open());
  ShardRecord r;
  r.key = next_key_++;
  r.label = label;
  r.size = static_cast<uint32_t>(image.size());
  r.crc32 = Crc32(image);
  r.offset = offset_ + kTarBlock;
  POLIS_RETURN_IF_ERROR(WriteMember(MemberName(r.key, EncodingExtension(encoding_)), image));
  POLIS_RETURN_IF_ERROR(WriteMember(MemberName(r.key, "cls"), std::to_string(label)));
  return Added(r, source);
}

Status ShardWriter::Added(ShardRecord r, const std::string& source) {
  index_.records.push_back(r);
  index_.sources.push_back(source);
  if (static_cast<int64_t>(index_.records.size()) >= per_shard_) return Close();
  return Status::Ok();
}

Status ShardWriter::AddWindow(const std::string& input_npy, const std::string& target_npy) {
  POLIS_ENFORCE(windows_);
  if (f_ == nullptr) POLIS_RETURN_IF_ERROR(Open());
  ShardRecord r;
  r.key = next_key_++;
  r.offset = offset_ + kTarBlock;
  // The span one pread reads: the input's bytes and padding, the target's
  // header and bytes.
  const std::string target_name = MemberName(r.key, kWindowTargetExt);
  std::string span = input_npy;
  span.resize(static_cast<size_t>(Padded(static_cast<int64_t>(input_npy.size()))), '\0');
  span += TarHeader(target_name, static_cast<int64_t>(target_npy.size()));
  r.target_at = static_cast<uint32_t>(span.size());
  span += target_npy;
  r.size = static_cast<uint32_t>(span.size());
  r.crc32 = Crc32(span);
  POLIS_RETURN_IF_ERROR(WriteMember(MemberName(r.key, kWindowInputExt), input_npy));
  POLIS_RETURN_IF_ERROR(WriteMember(target_name, target_npy));
  return Added(r, "");
}

Status ShardWriter::Close() {
  static const char kZeros[2 * kTarBlock] = {};
  POLIS_RETURN_IF_ERROR(Write(kZeros, sizeof kZeros));  // the end-of-archive marker
  const bool flushed = std::fflush(f_) == 0 && ::fsync(fileno(f_)) == 0;
  const int err = errno;
  std::fclose(f_);
  f_ = nullptr;
  if (!flushed) return ErrnoStatus("write", tmp_path_, err);
  const std::string tar_path = dir_ + "/" + index_.tar;
  if (std::rename(tmp_path_.c_str(), tar_path.c_str()) != 0) return ErrnoStatus("rename", tmp_path_, errno);
  POLIS_RETURN_IF_ERROR(SyncDirectory(dir_));
  index_.tar_bytes = offset_;
  json recs = json::array();
  for (const auto& r : index_.records) {
    recs.push_back({r.key, r.label, r.offset, r.size, r.crc32});
    if (windows_) recs.back().push_back(r.target_at);
  }
  bool any_source = false;
  for (const auto& s : index_.sources) any_source |= !s.empty();
  json j = {{"format", "polis-shard-index"}, {"version", 1}, {"tar", index_.tar}, {"tar_bytes", index_.tar_bytes},
            {"encoding", EncodingName(encoding_)}, {"records", recs}};
  if (any_source) j["sources"] = index_.sources;
  if (windows_) j["kind"] = "timeseries";
  const std::string text = j.dump() + "\n";
  ShardFileInfo info;
  info.tar = index_.tar;
  info.index = fmt::format("{}-{:06d}.idx", part_, done_.size());
  info.records = static_cast<int64_t>(index_.records.size());
  info.tar_bytes = index_.tar_bytes;
  info.index_sha256 = Sha256Hex(text);
  POLIS_RETURN_IF_ERROR(WriteFileAtomic(dir_ + "/" + info.index, text));
  done_.push_back(std::move(info));
  return Status::Ok();
}

StatusOr<std::vector<ShardFileInfo>> ShardWriter::Finish() {
  if (f_ != nullptr) POLIS_RETURN_IF_ERROR(Close());
  return done_;
}

Status ReadRecordBytes(int fd, const std::string& path, const ShardRecord& r, const char* ext, std::string* bytes) {
  const int64_t at = r.offset - kTarBlock;
  bytes->resize(static_cast<size_t>(kTarBlock + r.size));
  POLIS_RETURN_IF_ERROR(PreadAll(fd, path, bytes->data(), kTarBlock + r.size, at));
  const char* h = bytes->data();
  const std::string want = MemberName(r.key, ext);
  const int64_t size = OctalField(h + 124, 12);
  // A window's input member ends, padded, where the target's header starts.
  const bool size_ok = r.target_at == 0 ? size == r.size : Padded(size) + kTarBlock == r.target_at;
  if (std::strncmp(h, want.c_str(), 100) != 0 || !size_ok)
    return DataLoss("'{}' offset {}: the tar header names '{}' of {} bytes; the index expects '{}' of {} bytes", path,
                    at, std::string(h, strnlen(h, 100)), size, want,
                    r.target_at == 0 ? int64_t{r.size} : int64_t{r.target_at} - kTarBlock);
  if (r.target_at > 0) {
    const char* th = h + r.target_at;  // the target's header: kTarBlock before its bytes in the span
    const std::string target = MemberName(r.key, kWindowTargetExt);
    const int64_t target_size = int64_t{r.size} - r.target_at;
    if (r.target_at > r.size || std::strncmp(th, target.c_str(), 100) != 0 || OctalField(th + 124, 12) != target_size)
      return DataLoss("'{}' offset {}: the tar header names '{}' of {} bytes; the index expects '{}' of {} bytes",
                      path, r.offset + r.target_at - kTarBlock, std::string(th, strnlen(th, 100)),
                      OctalField(th + 124, 12), target, target_size);
  }
  bytes->erase(0, kTarBlock);
  const uint32_t crc = Crc32(*bytes);
  if (crc != r.crc32)
    return DataLoss("'{}' offset {}: record {} has CRC-32 {:08x} but the index says {:08x} (damaged bytes)", path,
                    r.offset, want, crc, r.crc32);
  return Status::Ok();
}

std::string FloatNpy(const float* values, const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::string out = NpyHeader("<f4", shape);
  out.append(reinterpret_cast<const char*>(values), static_cast<size_t>(n) * sizeof(float));
  return out;
}

namespace {

// One float32 .npy of `shape` (`padded`: followed by up to a tar block of
// zeros) into `out`.
std::string ReadFloatNpy(std::string_view bytes, const char* what, const std::vector<int64_t>& shape, bool padded,
                         float* out) {
  auto a = ParseNpy(bytes);
  if (!a.ok()) return fmt::format("{}: {}", what, a.status().message());
  if (a->descr != "<f4") return fmt::format("{}: dtype '{}'; expected float32 ('<f4')", what, a->descr);
  if (a->dims != shape)
    return fmt::format("{}: shape {}; expected ({})", what, a->shape, fmt::join(shape, ", "));
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const size_t want = static_cast<size_t>(n) * sizeof(float);
  if (a->data.size() < want || (padded ? a->data.size() - want >= kTarBlock : a->data.size() != want))
    return fmt::format("{}: {} bytes of values; shape {} holds {}", what, a->data.size(), a->shape, want);
  std::memcpy(out, a->data.data(), want);
  return "";
}

}  // namespace

std::string ParseWindowRecord(std::string_view bytes, const ShardRecord& r, int64_t lookback, int64_t features,
                              int64_t horizon, float* x, float* y) {
  if (r.target_at < kTarBlock || r.target_at > bytes.size())
    return fmt::format("target at {} lies outside the record's {} bytes", r.target_at, bytes.size());
  std::string e = ReadFloatNpy(bytes.substr(0, r.target_at - kTarBlock), kWindowInputExt, {lookback, features},
                               /*padded=*/true, x);
  if (e.empty()) e = ReadFloatNpy(bytes.substr(r.target_at), kWindowTargetExt, {horizon}, /*padded=*/false, y);
  return e;
}

namespace {

// verify's checks of one window record's values: "" or the problem.
std::string CheckWindow(std::string_view bytes, const ShardRecord& r, const ShardManifest& m, const std::string& tar,
                        std::vector<float>* x, std::vector<float>* y) {
  if (!m.timeseries() || (!r.target_at))
    return fmt::format("'{}' offset {}: record {} is not a time-series window", tar, r.offset, r.key);
  const std::string e = ParseWindowRecord(bytes, r, m.lookback, static_cast<int64_t>(m.features.size()), m.horizon,
                                          x->data(), y->data());
  if (!e.empty()) return fmt::format("'{}' offset {}: record {}: {}", tar, r.offset, r.key, e);
  for (const auto* v : {x, y})
    for (size_t i = 0; i < v->size(); ++i)
      if (!std::isfinite((*v)[i]))
        return fmt::format("'{}' offset {}: record {}: {} value {} is {}", tar, r.offset, r.key,
                           v == x ? kWindowInputExt : kWindowTargetExt, i, (*v)[i]);
  return "";
}

}  // namespace

VerifyResult VerifyShards(const std::string& dir, int max_problems) {
  VerifyResult v;
  auto problem = [&](std::string s) {
    if (!s.empty() && static_cast<int>(v.problems.size()) < max_problems) v.problems.push_back(std::move(s));
  };
  auto manifest = ReadManifest(dir);
  if (!manifest.ok()) {
    problem(manifest.status().message());
    return v;
  }
  const ShardManifest& m = *manifest;
  std::string bytes, cls;
  std::vector<float> x(static_cast<size_t>(m.lookback * static_cast<int64_t>(m.features.size()))),
      y(static_cast<size_t>(m.horizon));
  for (const auto* part : {&m.train, &m.validation, &m.test}) {
    for (const ShardFileInfo& f : *part) {
      ++v.shards;
      auto ix = ReadShardIndex(dir, f);
      if (!ix.ok()) {
        problem(ix.status().message());
        continue;
      }
      const std::string tar = dir + "/" + f.tar;
      const int fd = ::open(tar.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        problem(ErrnoStatus("open", tar, errno).message());
        continue;
      }
      struct stat st {};
      ::fstat(fd, &st);
      if (st.st_size != ix->tar_bytes)
        problem(fmt::format("'{}' is {} bytes but its index says {}{}", tar, st.st_size, ix->tar_bytes,
                            st.st_size < ix->tar_bytes ? " (truncated)" : ""));
      for (size_t i = 0; i < ix->records.size(); ++i) {
        const ShardRecord& r = ix->records[i];
        ++v.records;
        const std::string src = i < ix->sources.size() && !ix->sources[i].empty() ? " (from '" + ix->sources[i] + "')" : "";
        Status s = ReadRecordBytes(fd, tar, r, ix->extension(), &bytes);
        if (!s.ok()) {
          problem(s.message() + src);
          continue;
        }
        if (m.timeseries()) {
          problem(CheckWindow(bytes, r, m, tar, &x, &y));
          continue;
        }
        auto px = DecodeImage(bytes, m.channels);
        if (!px.ok()) {
          problem(fmt::format("'{}' offset {}: record {}: corrupt image: {}{}", tar, r.offset,
                              MemberName(r.key, EncodingExtension(ix->encoding)), px.status().message(), src));
          continue;
        }
        if (px->height != m.height || px->width != m.width)
          problem(fmt::format("'{}' offset {}: record {} is {}x{}; the dataset is {}x{}", tar, r.offset, r.key,
                              px->height, px->width, m.height, m.width));
        if (r.label < 0 || r.label >= static_cast<int32_t>(m.classes.size()))
          problem(fmt::format("'{}' offset {}: record {} has label {}; the dataset has {} classes", tar, r.offset,
                              r.key, r.label, m.classes.size()));
        // The .cls member follows the image, as the packer writes it.
        const int64_t cls_at = r.offset + Padded(r.size);
        const std::string want = std::to_string(r.label);
        cls.assign(kTarBlock + want.size(), '\0');
        Status cs = PreadAll(fd, tar, cls.data(), static_cast<int64_t>(cls.size()), cls_at);
        const std::string cls_name = MemberName(r.key, "cls");
        if (!cs.ok() || std::strncmp(cls.data(), cls_name.c_str(), 100) != 0 || cls.substr(kTarBlock) != want)
          problem(fmt::format("'{}' offset {}: member {} does not hold label {}", tar, cls_at, cls_name, want));
      }
      ::close(fd);
    }
  }
  return v;
}

}  // namespace polis::data
