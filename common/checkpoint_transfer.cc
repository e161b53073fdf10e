#include "common/checkpoint_transfer.h"

#include <algorithm>
#include <cstring>

#include "common/comm/control.h"
#include "common/comm/key_ranges.h"
#include "common/fs.h"
#include "common/log.h"

namespace polis {

struct BlobSend::State {
  std::string bytes;
  int64_t size = 0;
  comm::Channel* channel = nullptr;
  std::vector<comm::Request> reqs;
};

BlobSend::BlobSend() = default;
BlobSend::~BlobSend() {
  // A send still in flight must not lose its buffer: cancel it first.
  if (!active()) return;
  s_->channel->Cancel(s_->reqs.data(), static_cast<int>(s_->reqs.size()));
}
BlobSend::BlobSend(BlobSend&&) noexcept = default;
BlobSend& BlobSend::operator=(BlobSend&&) noexcept = default;

bool BlobSend::active() const { return s_ != nullptr && !s_->reqs.empty(); }

Status BlobSend::Start(comm::Channel* channel, int dest, int tag, std::string bytes, int64_t chunk) {
  if (active()) return InternalError("a blob send to rank {} started before the previous one finished", dest);
  s_ = std::make_unique<State>();
  s_->channel = channel;
  s_->bytes = std::move(bytes);
  s_->size = static_cast<int64_t>(s_->bytes.size());
  s_->reqs.emplace_back();
  POLIS_RETURN_IF_ERROR(channel->Isend(&s_->size, sizeof(s_->size), dest, tag, &s_->reqs.back()));
  for (int64_t at = 0; at < s_->size; at += chunk) {
    const int64_t n = std::min(chunk, s_->size - at);
    s_->reqs.emplace_back();
    POLIS_RETURN_IF_ERROR(channel->Isend(s_->bytes.data() + at, n, dest, tag, &s_->reqs.back()));
  }
  return Status::Ok();
}

Status BlobSend::Wait(comm::Clock::time_point deadline, const std::string& what) {
  if (!active()) return Status::Ok();
  POLIS_RETURN_IF_ERROR(comm::WaitAll(s_->channel, s_->reqs.data(), static_cast<int>(s_->reqs.size()), deadline,
                                      [&] { return what; }));
  s_.reset();
  return Status::Ok();
}

Status SendBlob(comm::Channel* channel, int dest, int tag, std::string bytes, comm::Clock::time_point deadline,
                const std::string& what, int64_t chunk) {
  BlobSend send;
  POLIS_RETURN_IF_ERROR(send.Start(channel, dest, tag, std::move(bytes), chunk));
  return send.Wait(deadline, what);
}

StatusOr<std::string> RecvBlob(comm::Channel* channel, int source, int tag, int64_t max_bytes,
                               comm::Clock::time_point deadline, const std::string& what, int64_t chunk) {
  int64_t size = -1;
  comm::Request req;
  POLIS_RETURN_IF_ERROR(channel->Irecv(&size, sizeof(size), source, tag, &req));
  POLIS_RETURN_IF_ERROR(comm::WaitAll(channel, &req, 1, deadline, [&] { return what; }));
  if (size < 0 || size > max_bytes)
    return DataLoss("{} from rank {}: {} bytes announced; at most {} expected", what, source, size, max_bytes);
  std::string bytes(static_cast<size_t>(size), '\0');
  std::vector<comm::Request> reqs;
  for (int64_t at = 0; at < size; at += chunk) {
    const int64_t n = std::min(chunk, size - at);
    reqs.emplace_back();
    POLIS_RETURN_IF_ERROR(channel->Irecv(bytes.data() + at, n, source, tag, &reqs.back()));
  }
  POLIS_RETURN_IF_ERROR(
      comm::WaitAll(channel, reqs.data(), static_cast<int>(reqs.size()), deadline, [&] { return what; }));
  return bytes;
}

int64_t MaxShardBytes(int64_t parameter_count) {
  return 8 * static_cast<int64_t>(sizeof(float)) * parameter_count + (int64_t{1} << 20);
}

Status StartShardSend(comm::Channel* ctrl, comm::Channel* data, int coordinator, const ShardFile& shard,
                      const std::string& job_sha256, const std::string& file, proto::ShardSaved* report,
                      BlobSend* send, int64_t chunk) {
  std::string bytes = EncodeShardFile(shard, job_sha256);
  report->set_path(file);
  report->set_sha256(Sha256Hex(bytes));
  POLIS_RETURN_IF_ERROR(comm::SendControl(ctrl, coordinator, [&] {
    proto::ControlMessage msg;
    *msg.mutable_shard_saved() = *report;
    return msg;
  }()));
  return send->Start(data, coordinator, kTagShardBytes, std::move(bytes), chunk);
}

Status ReceiveShard(comm::Channel* data, int from, const proto::ShardSaved& report, int64_t parameter_count,
                    const std::string& dir, comm::Clock::time_point deadline, int64_t chunk) {
  const std::string path = dir + "/" + report.path();
  POLIS_ASSIGN_OR_RETURN(std::string bytes,
                         RecvBlob(data, from, kTagShardBytes, MaxShardBytes(parameter_count), deadline,
                                  fmt::format("checkpoint shard '{}'", path), chunk));
  const std::string sum = Sha256Hex(bytes);
  if (sum != report.sha256())
    return DataLoss("checkpoint shard '{}' from rank {}: checksum mismatch: the report says {}, the bytes have {}",
                    path, from, report.sha256(), sum);
  // The bytes must be the shard the report names before they are kept.
  POLIS_ASSIGN_OR_RETURN(ShardFile shard, DecodeShardFile(bytes, path));
  if (shard.begin != report.begin() || shard.end != report.end() || shard.step != report.step())
    return DataLoss("checkpoint shard '{}' from rank {} holds [{}, {}) at step {}; the report says [{}, {}) at "
                    "step {}", path, from, shard.begin, shard.end, shard.step, report.begin(), report.end(),
                    report.step());
  POLIS_RETURN_IF_ERROR(MakeDirectories(dir));
  return WriteFileAtomic(path, bytes);
}

ShardFile ResumePart(const RoleContext& ctx, const CheckpointManifest& m, const FullState& full, int rank) {
  const int64_t P = static_cast<int64_t>(full.params.size());
  comm::KeyRange range{0, P};
  bool with_state = ctx.servers == 0;
  if (rank >= 1 && rank <= ctx.servers) {
    range = comm::PartitionByBytes(P, ctx.servers)[rank - 1];
    with_state = true;
  }
  ShardFile part;
  part.server = rank <= ctx.servers ? rank - 1 : 0;
  part.begin = range.begin;
  part.end = range.end;
  part.step = m.step;
  part.epoch = m.epoch;
  part.epoch_complete = m.epoch_complete;
  part.optimizer_steps = full.optimizer_steps;
  part.params.assign(full.params.begin() + range.begin, full.params.begin() + range.end);
  if (with_state)
    for (const auto& [name, v] : full.state)
      part.state.emplace_back(name, std::vector<float>(v.begin() + range.begin, v.begin() + range.end));
  return part;
}

Status ShareResumeState(RoleContext* ctx) {
  const auto deadline = comm::DeadlineFromNow();
  if (ctx->rank != 0) {
    POLIS_ASSIGN_OR_RETURN(std::string bytes,
                           RecvBlob(ctx->data, 0, kTagResumeBytes, MaxShardBytes(ctx->model.parameter_count()),
                                    deadline, "this rank's part of checkpoint " + ctx->resume_manifest));
    POLIS_ASSIGN_OR_RETURN(ctx->resumed, DecodeShardFile(bytes, ctx->resume_manifest + " (from the coordinator)"));
    return Status::Ok();
  }
  POLIS_ASSIGN_OR_RETURN(CheckpointManifest m, ReadManifest(ctx->resume_manifest));
  POLIS_ASSIGN_OR_RETURN(FullState full, LoadFullState(m));
  if (static_cast<int64_t>(full.params.size()) != ctx->model.parameter_count())
    return InvalidArgument("checkpoint '{}' holds {} parameters; the model has {}", m.dir, full.params.size(),
                           ctx->model.parameter_count());
  // One rank at a time: the coordinator holds one part besides the whole.
  for (int r = 1; r < ctx->world; ++r)
    POLIS_RETURN_IF_ERROR(SendBlob(ctx->data, r, kTagResumeBytes,
                                   EncodeShardFile(ResumePart(*ctx, m, full, r), ctx->job.sha256), deadline,
                                   fmt::format("rank {} ({}) to take its part of checkpoint {}", r,
                                               ctx->RoleName(r), m.dir)));
  return Status::Ok();
}

Status SendParams(comm::Channel* data, int dest, const std::vector<float>& params, comm::Clock::time_point deadline) {
  std::string bytes(reinterpret_cast<const char*>(params.data()), sizeof(float) * params.size());
  return SendBlob(data, dest, kTagEvalParams, std::move(bytes), deadline,
                  fmt::format("rank {} to take the parameters to evaluate", dest));
}

Status RecvParams(comm::Channel* data, int source, std::vector<float>* params, comm::Clock::time_point deadline) {
  const int64_t want = static_cast<int64_t>(sizeof(float) * params->size());
  POLIS_ASSIGN_OR_RETURN(std::string bytes, RecvBlob(data, source, kTagEvalParams, want, deadline,
                                                     "the parameters to evaluate"));
  if (static_cast<int64_t>(bytes.size()) != want)
    return DataLoss("the parameters to evaluate from rank {}: {} bytes; {} expected", source, bytes.size(), want);
  std::memcpy(params->data(), bytes.data(), bytes.size());
  return Status::Ok();
}

}  // namespace polis
