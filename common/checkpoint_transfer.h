// Checkpoints without a shared file system: the coordinator (rank 0) is the
// only process that reads or writes the run directory, so checkpoint data
// travels over the data channel (docs/design/multi-host.md, "What travels where"):
//
//   server / lead worker -> coordinator   a shard: the ShardSaved report on
//                                         the control channel, then the
//                                         shard file's bytes on the data one;
//                                         the coordinator checks and writes
//                                         them (ReceiveShard)
//   coordinator -> every rank, --resume   its part of the checkpoint
//                                         (ShareResumeState)
//   coordinator -> worker                 the parameters of the checkpoint to
//                                         evaluate (training.restore_best)
//
// Bytes travel as an int64 length, then chunks of at most kBlobChunkBytes
// (one message carries at most 2 GiB), on tags of their own on the data channel.
// Messages between one pair of ranks on one tag arrive in order, so a
// receiver that knows the sender takes them as they come. Every wait has a
// deadline. Free functions; call them from the thread that owns the channels.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/comm/channel.h"
#include "common/proto/control.pb.h"
#include "common/role.h"
#include "common/status.h"

namespace polis {

// Tags on the data channel, beside common/comm/channel.h's DataTag.
enum CheckpointTag : int {
  kTagShardBytes = 30,   // server / lead worker -> coordinator: a shard file
  kTagResumeBytes = 31,  // coordinator -> rank at --resume: its part
  kTagEvalParams = 32,   // coordinator -> worker: parameters to evaluate
};

constexpr int64_t kBlobChunkBytes = int64_t{64} << 20;

// A send of bytes in flight; it owns them (and its requests) until Wait.
class BlobSend {
 public:
  BlobSend();
  ~BlobSend();
  BlobSend(BlobSend&&) noexcept;
  BlobSend& operator=(BlobSend&&) noexcept;

  // Posts the length and the chunks to `dest` (non-blocking).
  Status Start(comm::Channel* channel, int dest, int tag, std::string bytes, int64_t chunk = kBlobChunkBytes);
  bool active() const;
  // Until the receiver has taken every chunk, or the deadline (Timeout
  // naming `what`).
  Status Wait(comm::Clock::time_point deadline, const std::string& what);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Start, then Wait.
Status SendBlob(comm::Channel* channel, int dest, int tag, std::string bytes, comm::Clock::time_point deadline,
                const std::string& what, int64_t chunk = kBlobChunkBytes);
// The bytes `source` sends with SendBlob; a length above `max_bytes` (or
// negative) is DataLoss naming `what`, nothing allocated.
StatusOr<std::string> RecvBlob(comm::Channel* channel, int source, int tag, int64_t max_bytes,
                               comm::Clock::time_point deadline, const std::string& what,
                               int64_t chunk = kBlobChunkBytes);

// The most bytes a shard of a model with `parameter_count` parameters may
// take: parameters and up to 7 optimizer state vectors, and a header.
int64_t MaxShardBytes(int64_t parameter_count);

// Sender of a checkpoint shard (a server, or the lead worker of an all-reduce
// job): fills `report`'s path (`file`) and sha256 (of the bytes), sends it
// to `coordinator` on `ctrl`, and starts the bytes on `data` in `send`.
Status StartShardSend(comm::Channel* ctrl, comm::Channel* data, int coordinator, const ShardFile& shard,
                      const std::string& job_sha256, const std::string& file, proto::ShardSaved* report,
                      BlobSend* send, int64_t chunk = kBlobChunkBytes);
// The coordinator's side: receives the bytes behind `report` from `from`,
// checks their SHA-256 and key range against the report, and writes them
// to <dir>/<report.path()> (temporary name, fsync, rename).
Status ReceiveShard(comm::Channel* data, int from, const proto::ShardSaved& report, int64_t parameter_count,
                    const std::string& dir, comm::Clock::time_point deadline, int64_t chunk = kBlobChunkBytes);

// What rank `rank` resumes from, cut from a checkpoint's full state:
// a server its key range with the optimizer state; a worker every
// parameter, with the optimizer state in all-reduce mode (where workers run
// the optimizer).
ShardFile ResumePart(const RoleContext& ctx, const CheckpointManifest& m, const FullState& full, int rank);
// --resume: the coordinator reads ctx->resume_manifest's checkpoint and
// sends every other rank its part; the others receive theirs into
// ctx->resumed. Called by every rank once the transport exists.
Status ShareResumeState(RoleContext* ctx);

// training.restore_best: the coordinator sends a worker the parameters to
// evaluate; the worker takes exactly params->size() of them.
Status SendParams(comm::Channel* data, int dest, const std::vector<float>& params, comm::Clock::time_point deadline);
Status RecvParams(comm::Channel* data, int source, std::vector<float>* params, comm::Clock::time_point deadline);

}  // namespace polis
