// Checkpoints of a parameter-server job: one shard file per server (its key
// range and optimizer state) and a manifest written last by the
// coordinator, naming every shard with its SHA-256 and the data cursor: the
// positions of the epoch's permutation whose gradients the snapshot holds.
//
//   <run-dir>/checkpoints/step-<step>[-end]/server-<s>.shard
//   <run-dir>/checkpoints/step-<step>[-end]/manifest.json
//
// Only the coordinator reads or writes these files: servers (and the lead
// worker of an all-reduce job) send their shards over MPI and the ranks get
// their part back at resume (common/checkpoint_transfer.h).
// Shards and manifest are written to temporary names, fsynced and renamed;
// a checkpoint without a valid manifest, or whose shards fail their
// checksums, is skipped (with a warning naming it) in favour of the newest
// complete one. Stateless functions; safe from any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/data/shard_plan.h"
#include "common/optimizer.h"
#include "common/status.h"

namespace polis {

struct ShardFile {
  int server = 0;
  int64_t begin = 0, end = 0;
  int64_t step = 0;
  int64_t optimizer_steps = 0;
  // The epoch in progress (or just completed) at `step`; 0 in shard files
  // written before they kept it (the manifest has it too).
  int epoch = 0;
  bool epoch_complete = false;
  std::vector<float> params;
  std::vector<std::pair<std::string, std::vector<float>>> state;
};

Status WriteShardFile(const std::string& path, const ShardFile& shard, const std::string& job_sha256);
StatusOr<ShardFile> ReadShardFile(const std::string& path);
// The bytes WriteShardFile writes, and back (`path` names their source in
// messages): what travels over MPI between the coordinator and the ranks
// (common/checkpoint_transfer.h).
std::string EncodeShardFile(const ShardFile& shard, const std::string& job_sha256);
StatusOr<ShardFile> DecodeShardFile(std::string_view bytes, const std::string& path);

struct CheckpointManifest {
  int64_t step = 0;
  int epoch = 0;                   // in progress, or just completed
  bool epoch_complete = false;
  int workers = 0, servers = 0;
  int64_t parameter_count = 0;
  std::string job_sha256;
  // The effective job (protobuf text, after command-line overrides) and
  // ModelLayoutSha256 of its model: what a resume is compared with
  // (common/resume.h). Empty in checkpoints written before they were kept.
  std::string job_text;
  std::string model_sha256;
  struct Shard {
    int server = 0;
    int64_t begin = 0, end = 0;
    std::string file;              // relative to the checkpoint directory
    std::string sha256;
  };
  std::vector<Shard> shards;
  // Positions of `epoch`'s permutation already trained on (merged ranges).
  std::vector<data::ShardPlanner::Range> consumed;
  // Per worker, in the order granted: positions granted but not yet trained
  // at the checkpoint (empty in manifests written before they were kept). A
  // resume on as many workers hands each worker its own first, so batches
  // are composed as in the uninterrupted run; on another count they go back
  // to the common pool.
  std::vector<std::vector<data::ShardPlanner::Range>> pending;
  std::string dir;                 // set when read
};

std::string CheckpointDirName(int64_t step, bool epoch_complete);
Status WriteManifest(const std::string& dir, const CheckpointManifest& m);
// Verifies the manifest's own checksum and every shard's, and that the
// shards tile [0, parameter_count) exactly.
StatusOr<CheckpointManifest> ReadManifest(const std::string& dir);
// ReadManifest without the file system: the text of a manifest.json (`path`
// names it in messages), its checksum, fields, tiling and shard file names
// (plain names inside the checkpoint directory). Shard files are not read.
StatusOr<CheckpointManifest> ParseManifest(std::string_view text, const std::string& path);
// The newest complete checkpoint under <run_dir>/checkpoints; NotFound if none.
// Skipped ones are reported in *skipped (one line each).
StatusOr<CheckpointManifest> FindLatestCheckpoint(const std::string& run_dir,
                                                  std::vector<std::string>* skipped);
// Removes all but the newest `keep` checkpoint directories, and `spare`
// (a checkpoint directory, training.restore_best's best epoch) if given.
void PruneCheckpoints(const std::string& run_dir, int keep, const std::string& spare = "");

// Reassembles the full parameter vector (and each optimizer state vector)
// from a checkpoint's shards, whatever key ranges they had. Every shard's
// vectors must hold exactly its range: DataLoss naming the file otherwise.
struct FullState {
  std::vector<float> params;
  std::vector<std::pair<std::string, std::vector<float>>> state;
  int64_t optimizer_steps = 0;
};
StatusOr<FullState> LoadFullState(const CheckpointManifest& m);

// The manifest's sample positions against an epoch of n: every consumed and
// pending range inside [0, n), none overlapping another.
Status CheckPositions(const CheckpointManifest& m, int64_t n);
// Merges ranges into sorted, disjoint ones; Complement gives [0, n) minus them.
std::vector<data::ShardPlanner::Range> MergeRanges(std::vector<data::ShardPlanner::Range> r);
std::vector<data::ShardPlanner::Range> Complement(const std::vector<data::ShardPlanner::Range>& merged,
                                                  int64_t n);

}  // namespace polis
