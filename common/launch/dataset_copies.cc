#include "common/launch/dataset_copies.h"

#include <filesystem>
#include <stdexcept>
#include <nlohmann/json.hpp>

#include "common/data/dataset.h"
#include "common/data/shard_format.h"
#include "common/fs.h"

namespace polis::launch {

std::vector<std::string> DatasetFiles(const proto::JobSpec& spec) {
  const auto& d = spec.dataset();
  if (d.format() == proto::DatasetSpec::CSV) return {d.timeseries().path()};
  if (d.format() == proto::DatasetSpec::SHARDS) {
    // The manifest and the indexes (which hold every record's CRC-32), not
    // the tars: hashing those would read the whole dataset on every host.
    std::vector<std::string> files = {d.dir() + "/" + data::kManifestName};
    if (auto m = data::ReadManifest(d.dir()); m.ok())
      for (const auto* part : {&m->train, &m->validation, &m->test})
        for (const auto& s : *part) files.push_back(d.dir() + "/" + s.index);
    return files;
  }
  const data::DatasetPaths p = data::ResolveDataset(d);
  return {p.train_images, p.train_labels, p.test_images, p.test_labels};
}

std::vector<DatasetFile> FingerprintFiles(const std::vector<std::string>& paths) {
  std::vector<DatasetFile> out;
  for (const std::string& path : paths) {
    DatasetFile f;
    f.path = path;
    if (!PathExists(path)) {
      f.missing = true;
    } else if (auto sum = Sha256File(path); !sum.ok()) {
      f.error = sum.status().message();
    } else {
      std::error_code ec;
      f.size = static_cast<int64_t>(std::filesystem::file_size(path, ec));
      f.sha256 = *sum;
    }
    out.push_back(std::move(f));
  }
  return out;
}

std::string EncodeFingerprints(const std::vector<DatasetFile>& files) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& f : files)
    out.push_back({{"path", f.path}, {"missing", f.missing}, {"error", f.error}, {"size", f.size},
                   {"sha256", f.sha256}});
  return out.dump();
}

StatusOr<std::vector<DatasetFile>> DecodeFingerprints(const std::string& text, const std::string& host) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  std::vector<DatasetFile> out;
  try {
    if (j.is_discarded() || !j.is_array()) throw std::runtime_error("not a list");
    for (const auto& f : j)
      out.push_back({f.at("path").get<std::string>(), f.at("missing").get<bool>(), f.at("error").get<std::string>(),
                     f.at("size").get<int64_t>(), f.at("sha256").get<std::string>()});
  } catch (const std::exception& e) {
    return InternalError("host {}: its dataset fingerprint does not parse ({})", host, e.what());
  }
  return out;
}

Status CompareDatasetCopy(const std::string& reference_host, const std::vector<DatasetFile>& reference,
                          const std::string& host, const std::vector<DatasetFile>& copy) {
  for (const DatasetFile& ref : reference) {
    if (ref.missing)
      return FailedPrecondition("host {} (the coordinator's): dataset file '{}' is missing", reference_host, ref.path);
    if (!ref.error.empty())
      return FailedPrecondition("host {} (the coordinator's): dataset file '{}' cannot be read: {}", reference_host,
                                ref.path, ref.error);
  }
  if (copy.size() != reference.size())
    return InternalError("host {} lists {} dataset files; the coordinator's host {} lists {}", host, copy.size(),
                         reference_host, reference.size());
  for (size_t i = 0; i < copy.size(); ++i) {
    const DatasetFile &mine = copy[i], &ref = reference[i];
    if (mine.missing)
      return FailedPrecondition("host {}: dataset file '{}' is missing (each host reads its own copy at the job's "
                                "path; the coordinator's host {} has it)", host, mine.path, reference_host);
    if (!mine.error.empty())
      return FailedPrecondition("host {}: dataset file '{}' cannot be read: {}", host, mine.path, mine.error);
    if (mine.size != ref.size || mine.sha256 != ref.sha256)
      return FailedPrecondition("host {}: dataset file '{}' differs from the coordinator's copy on {} ({} bytes, "
                                "SHA-256 {}... here; {} bytes, SHA-256 {}... there)", host, mine.path,
                                reference_host, mine.size, mine.sha256.substr(0, 12), ref.size,
                                ref.sha256.substr(0, 12));
  }
  return Status::Ok();
}

namespace {

// The lowest rank on each host: the one that fingerprints the host's copy.
bool FirstOnHost(const std::vector<PlacedRank>& placement, int rank) {
  for (int r = 0; r < rank; ++r)
    if (placement[r].host == placement[rank].host) return false;
  return true;
}

// Gathers one string per rank at rank 0 ("" from the others).
std::vector<std::string> GatherStrings(MPI_Comm comm, int rank, const std::string& mine) {
  int world = 0;
  MPI_Comm_size(comm, &world);
  int len = static_cast<int>(mine.size());
  std::vector<int> lens(rank == 0 ? world : 0), offsets(rank == 0 ? world : 0);
  MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, comm);
  std::string all;
  if (rank == 0) {
    int at = 0;
    for (int r = 0; r < world; ++r) offsets[r] = at, at += lens[r];
    all.resize(at);
  }
  MPI_Gatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), offsets.data(), MPI_CHAR, 0, comm);
  std::vector<std::string> out;
  for (int r = 0; rank == 0 && r < world; ++r) out.push_back(all.substr(offsets[r], lens[r]));
  return out;
}

}  // namespace

Status CheckDatasetCopies(MPI_Comm comm, int rank, const std::vector<PlacedRank>& placement,
                          const proto::JobSpec& spec) {
  bool several = false;
  for (const auto& p : placement) several |= p.host != placement[0].host;
  // dataset.source COORDINATOR: the coordinator's copy is the only one read.
  if (!several || spec.dataset().source() == proto::DatasetSpec::COORDINATOR) return Status::Ok();
  const std::string mine = FirstOnHost(placement, rank)
                               ? EncodeFingerprints(FingerprintFiles(DatasetFiles(spec))) : std::string();
  const std::vector<std::string> all = GatherStrings(comm, rank, mine);
  std::string verdict;  // "" when every copy agrees; else the line
  if (rank == 0) {
    Status st = [&]() -> Status {
      POLIS_ASSIGN_OR_RETURN(auto reference, DecodeFingerprints(all[0], placement[0].host));
      for (size_t r = 1; r < all.size(); ++r) {
        if (all[r].empty()) continue;
        POLIS_ASSIGN_OR_RETURN(auto copy, DecodeFingerprints(all[r], placement[r].host));
        POLIS_RETURN_IF_ERROR(CompareDatasetCopy(placement[0].host, reference, placement[r].host, copy));
      }
      return Status::Ok();
    }();
    verdict = st.message();
  }
  int len = static_cast<int>(verdict.size());
  MPI_Bcast(&len, 1, MPI_INT, 0, comm);
  verdict.resize(len);
  MPI_Bcast(verdict.data(), len, MPI_CHAR, 0, comm);
  return verdict.empty() ? Status::Ok() : FailedPrecondition("{}", verdict);
}

}  // namespace polis::launch
