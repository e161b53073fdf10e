// Datasets across hosts: each host reads its own copy at the path in the job
// spec (the Horovod/torchrun convention); nothing is shipped. At start one
// rank per host fingerprints the files the job reads (size and SHA-256), the
// coordinator compares every host's copy with its own, and a copy that is
// missing or different stops the job before training, with one line naming
// the host and the path (docs/design/multi-host.md, "What each host needs").
// Stateless; CheckDatasetCopies is collective over its communicator.
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

#include "common/launch/placement.h"
#include "common/proto/job.pb.h"
#include "common/status.h"

namespace polis::launch {

struct DatasetFile {
  std::string path;
  bool missing = false;
  std::string error;  // unreadable (not missing): why
  int64_t size = 0;
  std::string sha256;
};

// The files the job reads: IDX images and labels (train and test), a
// SHARDS dataset's manifest and indexes, or the
// time series CSV; paths as resolved on this host.
std::vector<std::string> DatasetFiles(const proto::JobSpec& spec);
std::vector<DatasetFile> FingerprintFiles(const std::vector<std::string>& paths);
std::string EncodeFingerprints(const std::vector<DatasetFile>& files);
StatusOr<std::vector<DatasetFile>> DecodeFingerprints(const std::string& text, const std::string& host);
// FailedPrecondition naming `host` and the first file that is missing,
// unreadable or unlike `reference` (the coordinator's, on `reference_host`).
Status CompareDatasetCopy(const std::string& reference_host, const std::vector<DatasetFile>& reference,
                          const std::string& host, const std::vector<DatasetFile>& copy);
// Every rank of `comm` calls it; the first rank of each host (in
// `placement`) fingerprints its copy; rank 0 compares; every rank returns
// the verdict. Ok at once when the placement names fewer than two hosts.
Status CheckDatasetCopies(MPI_Comm comm, int rank, const std::vector<PlacedRank>& placement,
                          const proto::JobSpec& spec);

}  // namespace polis::launch
