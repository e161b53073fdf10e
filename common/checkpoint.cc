#include "common/checkpoint.h"

#include <algorithm>
#include <filesystem>

#include "common/artifact/artifact.h"
#include "common/echo.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/proto/checkpoint.pb.h"

namespace polis {
namespace {

constexpr char kShardMagic[] = "POLISCK1";
using Range = data::ShardPlanner::Range;

}  // namespace

std::string EncodeShardFile(const ShardFile& s, const std::string& job_sha256) {
  proto::CheckpointShard h;
  h.set_server(s.server);
  h.set_begin(s.begin);
  h.set_end(s.end);
  h.set_step(s.step);
  h.set_optimizer_steps(s.optimizer_steps);
  h.set_job_sha256(job_sha256);
  h.set_epoch(s.epoch);
  h.set_epoch_complete(s.epoch_complete);
  std::vector<float> floats = s.params;
  for (const auto& [name, v] : s.state) {
    h.add_state_names(name);
    floats.insert(floats.end(), v.begin(), v.end());
  }
  std::string header;
  POLIS_ENFORCE(h.SerializeToString(&header));
  return EncodeFramed(std::string_view(kShardMagic, 8), header, floats);
}

Status WriteShardFile(const std::string& path, const ShardFile& s, const std::string& job_sha256) {
  return WriteFileAtomic(path, EncodeShardFile(s, job_sha256));
}

StatusOr<ShardFile> ReadShardFile(const std::string& path) {
  POLIS_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return DecodeShardFile(bytes, path);
}

StatusOr<ShardFile> DecodeShardFile(std::string_view bytes, const std::string& path) {
  POLIS_ASSIGN_OR_RETURN(FramedFile f, DecodeFramed(bytes, std::string_view(kShardMagic, 8),
                                                    "checkpoint shard", path));
  proto::CheckpointShard h;
  if (!h.ParseFromString(f.header))
    return DataLoss("'{}': the header at byte offset {} does not parse", path, f.header_offset);
  // The range comes from the file: its length and the floats it needs are
  // computed so that no value of begin, end or the state count overflows.
  int64_t n = 0;
  const size_t parts = 1 + static_cast<size_t>(h.state_names_size());
  if (__builtin_sub_overflow(h.end(), h.begin(), &n) || n < 0 ||
      static_cast<uint64_t>(n) > f.floats.size() / parts ||
      f.floats.size() != parts * static_cast<size_t>(n))
    return DataLoss("'{}': holds {} floats but range [{}, {}) with {} state vectors needs {} x the "
                    "range's length", path, f.floats.size(), h.begin(), h.end(),
                    h.state_names_size(), parts);
  ShardFile s;
  s.server = h.server();
  s.begin = h.begin();
  s.end = h.end();
  s.step = h.step();
  s.optimizer_steps = h.optimizer_steps();
  s.epoch = h.epoch();
  s.epoch_complete = h.epoch_complete();
  s.params.assign(f.floats.begin(), f.floats.begin() + n);
  for (int i = 0; i < h.state_names_size(); ++i)
    s.state.emplace_back(h.state_names(i), std::vector<float>(f.floats.begin() + (i + 1) * n,
                                                              f.floats.begin() + (i + 2) * n));
  return s;
}

std::string CheckpointDirName(int64_t step, bool epoch_complete) {
  return fmt::format("step-{:09}{}", step, epoch_complete ? "-end" : "");
}

namespace {

nlohmann::json ToJson(const CheckpointManifest& m) {
  nlohmann::json shards = nlohmann::json::array(), consumed = nlohmann::json::array();
  for (const auto& s : m.shards)
    shards.push_back({{"server", s.server}, {"begin", s.begin}, {"end", s.end}, {"file", s.file},
                      {"sha256", s.sha256}});
  for (const auto& r : m.consumed) consumed.push_back({r.begin, r.end});
  nlohmann::json pending = nlohmann::json::array();
  for (const auto& worker : m.pending) {
    nlohmann::json ranges = nlohmann::json::array();
    for (const auto& r : worker) ranges.push_back({r.begin, r.end});
    pending.push_back(std::move(ranges));
  }
  return {{"step", m.step}, {"epoch", m.epoch}, {"epoch_complete", m.epoch_complete},
          {"workers", m.workers}, {"servers", m.servers}, {"parameter_count", m.parameter_count},
          {"job_sha256", m.job_sha256}, {"job", m.job_text}, {"model_sha256", m.model_sha256},
          {"shards", shards}, {"consumed", consumed}, {"pending", pending}};
}

}  // namespace

Status WriteManifest(const std::string& dir, const CheckpointManifest& m) {
  nlohmann::json j = ToJson(m);
  const std::string body = j.dump();
  nlohmann::json out = {{"manifest", j}, {"sha256", Sha256Hex(body)}, {"created_at", UtcTimestamp()}};
  return WriteFileAtomic(dir + "/manifest.json", out.dump(2) + "\n");
}

StatusOr<CheckpointManifest> ParseManifest(std::string_view text, const std::string& path) {
  auto out = nlohmann::json::parse(text, nullptr, false);
  if (out.is_discarded() || !out.is_object() || !out.contains("manifest") ||
      !out["manifest"].is_object() || !out.contains("sha256") || !out["sha256"].is_string())
    return DataLoss("'{}' is not a checkpoint manifest (partial write?)", path);
  const nlohmann::json& j = out["manifest"];
  if (Sha256Hex(j.dump()) != out["sha256"].get<std::string>())
    return DataLoss("'{}': checksum mismatch", path);
  CheckpointManifest m;
  // get<T> of a JSON number converts without a range check (a fraction or
  // 1e30 into an int is undefined): integers are checked here first.
  std::string bad;  // the first field that is not an integer in range
  auto integer = [&](const nlohmann::json& v, const char* field, int64_t lo = INT64_MIN,
                     int64_t hi = INT64_MAX) -> int64_t {
    const bool ok = v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(hi)
                    : v.is_number_integer() ? v.get<int64_t>() >= lo && v.get<int64_t>() <= hi
                                            : false;
    if (!ok && bad.empty())
      bad = fmt::format("{} is {}; expected an integer in [{}, {}]", field, EchoValue(v.dump()), lo, hi);
    return ok ? v.get<int64_t>() : 0;
  };
  auto int32 = [&](const nlohmann::json& v, const char* field) {
    return static_cast<int>(integer(v, field, INT32_MIN, INT32_MAX));
  };
  try {
    m.step = integer(j.at("step"), "step");
    m.epoch = int32(j.at("epoch"), "epoch");
    m.epoch_complete = j.at("epoch_complete").get<bool>();
    m.workers = int32(j.at("workers"), "workers");
    m.servers = int32(j.at("servers"), "servers");
    m.parameter_count = integer(j.at("parameter_count"), "parameter_count");
    m.job_sha256 = j.at("job_sha256").get<std::string>();
    m.job_text = j.value("job", "");
    m.model_sha256 = j.value("model_sha256", "");
    for (const auto& s : j.at("shards"))
      m.shards.push_back({int32(s.at("server"), "shards[].server"), integer(s.at("begin"), "shards[].begin"),
                          integer(s.at("end"), "shards[].end"), s.at("file").get<std::string>(),
                          s.at("sha256").get<std::string>()});
    for (const auto& r : j.at("consumed"))
      m.consumed.push_back({integer(r.at(0), "consumed[][0]"), integer(r.at(1), "consumed[][1]")});
    if (j.contains("pending")) {
      for (const auto& worker : j.at("pending")) {
        m.pending.emplace_back();
        for (const auto& r : worker)
          m.pending.back().push_back({integer(r.at(0), "pending[][][0]", 0), integer(r.at(1), "pending[][][1]", 0)});
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return DataLoss("'{}': {}", path, e.what());
  }
  if (!bad.empty()) return DataLoss("'{}': {}", path, bad);
  if (m.parameter_count <= 0 || m.shards.empty())
    return DataLoss("'{}': {} parameters in {} shards", path, m.parameter_count, m.shards.size());
  // The shards must tile [0, parameter_count): sorted, adjacent, in range.
  std::vector<CheckpointManifest::Shard> sorted = m.shards;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
  int64_t at = 0;
  for (const auto& s : sorted) {
    if (s.begin != at || s.end <= s.begin || s.end > m.parameter_count)
      return DataLoss("'{}': shard '{}' holds [{}, {}) where [{}, ...) of {} parameters was expected",
                      path, EchoValue(s.file), s.begin, s.end, at, m.parameter_count);
    at = s.end;
  }
  if (at != m.parameter_count)
    return DataLoss("'{}': shards cover {} of {} parameters", path, at, m.parameter_count);
  // Shard files lie in the checkpoint directory: a name that leads out of it
  // (or to a device) would have the reader hash whatever it names.
  for (const auto& s : m.shards) {
    if (s.file.empty() || s.file == "." || s.file == ".." ||
        s.file.find_first_of(std::string_view("/\0", 2)) != std::string::npos)
      return DataLoss("'{}': shard file '{}' is not a file name in the checkpoint directory", path,
                      EchoValue(s.file));
  }
  if (!m.pending.empty() && static_cast<int64_t>(m.pending.size()) != m.workers)
    return DataLoss("'{}': pending lists {} workers; the checkpoint has {}", path, m.pending.size(), m.workers);
  for (size_t w = 0; w < m.pending.size(); ++w)
    for (const auto& r : m.pending[w])
      if (r.end <= r.begin)
        return DataLoss("'{}': pending[{}] holds the empty or reversed range [{}, {})", path, w, r.begin, r.end);
  return m;
}

StatusOr<CheckpointManifest> ReadManifest(const std::string& dir) {
  const std::string path = dir + "/manifest.json";
  POLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  POLIS_ASSIGN_OR_RETURN(CheckpointManifest m, ParseManifest(text, path));
  m.dir = dir;
  for (const auto& s : m.shards) {
    POLIS_ASSIGN_OR_RETURN(std::string sum, Sha256File(dir + "/" + s.file));
    if (sum != s.sha256)
      return DataLoss("'{}/{}': checksum mismatch: the manifest says {}, the file has {}", dir,
                      s.file, EchoValue(s.sha256), sum);
  }
  return m;
}

StatusOr<CheckpointManifest> FindLatestCheckpoint(const std::string& run_dir,
                                                  std::vector<std::string>* skipped) {
  const std::string root = run_dir + "/checkpoints";
  std::vector<std::string> dirs;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(root, ec))
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0)
      dirs.push_back(e.path().string());
  if (ec) return NotFound("no checkpoints in '{}': {}", root, ec.message());
  // Names sort by step, and "-end" after the mid-epoch one of the same step.
  std::sort(dirs.rbegin(), dirs.rend());
  for (const auto& d : dirs) {
    auto m = ReadManifest(d);
    if (m.ok()) return m;
    if (skipped) skipped->push_back(fmt::format("skipping checkpoint '{}': {}", d, m.status().message()));
  }
  return NotFound("no complete checkpoint in '{}'", root);
}

void PruneCheckpoints(const std::string& run_dir, int keep, const std::string& spare) {
  const std::string root = run_dir + "/checkpoints";
  const std::string spared = spare.empty() ? "" : std::filesystem::path(spare).filename().string();
  std::vector<std::string> complete;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(root, ec))
    if (e.is_directory() && PathExists(e.path().string() + "/manifest.json") &&
        e.path().filename().string() != spared)
      complete.push_back(e.path().string());
  std::sort(complete.begin(), complete.end());
  for (size_t i = 0; i + keep < complete.size(); ++i) std::filesystem::remove_all(complete[i], ec);
}

StatusOr<FullState> LoadFullState(const CheckpointManifest& m) {
  FullState full;
  full.params.assign(m.parameter_count, 0.f);
  for (const auto& s : m.shards) {
    POLIS_ASSIGN_OR_RETURN(ShardFile f, ReadShardFile(m.dir + "/" + s.file));
    if (f.begin != s.begin || f.end != s.end)
      return DataLoss("'{}/{}': holds [{}, {}) but the manifest says [{}, {})", m.dir, s.file, f.begin,
                      f.end, s.begin, s.end);
    const size_t n = static_cast<size_t>(s.end - s.begin);
    if (s.begin < 0 || s.end > m.parameter_count || f.params.size() != n)
      return DataLoss("'{}/{}': holds {} parameters for [{}, {}) of {}", m.dir, s.file, f.params.size(),
                      s.begin, s.end, m.parameter_count);
    for (const auto& [name, v] : f.state)
      if (v.size() != n)
        return DataLoss("'{}/{}': optimizer state '{}' holds {} values for a range of {}", m.dir, s.file,
                        name, v.size(), n);
    std::copy(f.params.begin(), f.params.end(), full.params.begin() + f.begin);
    if (full.state.empty())
      for (const auto& [name, v] : f.state) full.state.emplace_back(name, std::vector<float>(m.parameter_count));
    if (full.state.size() != f.state.size())
      return DataLoss("'{}/{}': optimizer state differs from the other shards", m.dir, s.file);
    for (size_t i = 0; i < f.state.size(); ++i)
      std::copy(f.state[i].second.begin(), f.state[i].second.end(), full.state[i].second.begin() + f.begin);
    full.optimizer_steps = f.optimizer_steps;
  }
  return full;
}

Status CheckPositions(const CheckpointManifest& m, int64_t n) {
  std::vector<Range> all = m.consumed;
  for (const auto& p : m.pending) all.insert(all.end(), p.begin(), p.end());
  std::sort(all.begin(), all.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  int64_t at = 0;
  for (const Range& r : all) {
    if (r.begin < at || r.end <= r.begin || r.end > n)
      return DataLoss("'{}': sample positions [{}, {}) overlap others or lie outside the epoch's [0, {})", m.dir,
                      r.begin, r.end, n);
    at = r.end;
  }
  return Status::Ok();
}

std::vector<Range> MergeRanges(std::vector<Range> r) {
  std::sort(r.begin(), r.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  std::vector<Range> out;
  for (const Range& x : r) {
    if (x.begin >= x.end) continue;
    if (!out.empty() && x.begin <= out.back().end) out.back().end = std::max(out.back().end, x.end);
    else out.push_back(x);
  }
  return out;
}

std::vector<Range> Complement(const std::vector<Range>& merged, int64_t n) {
  std::vector<Range> out;
  int64_t at = 0;
  for (const Range& r : merged) {
    if (r.begin > at) out.push_back({at, r.begin});
    at = std::max(at, r.end);
  }
  if (at < n) out.push_back({at, n});
  return out;
}

}  // namespace polis
