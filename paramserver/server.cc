#include "paramserver/server.h"

#include <cstring>
#include <vector>

#include "common/comm/key_ranges.h"
#include "common/comm/mpi_util.h"
#include "common/log.h"
#include "common/optimizer.h"

namespace polis::paramserver {

using comm::DataTag;

Status RunServer(const RoleContext& ctx) {
  const auto ranges = comm::PartitionByBytes(ctx.model.parameter_count(), ctx.servers);
  const comm::KeyRange range = ranges[ctx.server_index()];
  const int64_t n = range.size();
  const int W = ctx.workers;
  POLIS_LOG(kInfo, kPs, "server {} owns floats [{}, {}) of {}", ctx.server_index(), range.begin,
            range.end, ctx.model.parameter_count());

  // Every rank derives the same initial parameters from the job's seed.
  std::vector<float> full(ctx.model.parameter_count());
  ctx.model.InitParams(full.data(), ctx.job.spec.training().seed());
  std::vector<float> params(full.begin() + range.begin, full.begin() + range.end);
  std::vector<float>().swap(full);
  POLIS_ASSIGN_OR_RETURN(auto optimizer, MakeOptimizer(ctx.job.spec.optimizer(), n));

  std::vector<PushHeader> push(W);
  std::vector<PullHeader> pull(W);
  std::vector<std::vector<float>> recv(W, std::vector<float>(n));
  std::vector<float> sum(n);
  std::vector<MPI_Request> rreq(2 * W, MPI_REQUEST_NULL), sreq(2 * W, MPI_REQUEST_NULL);
  const int cn = static_cast<int>(n);

  auto post_receives = [&]() -> Status {
    for (int w = 0; w < W; ++w) {
      int src = ctx.worker_rank(w);
      POLIS_MPI_CHECK(MPI_Irecv(&push[w], sizeof(PushHeader), MPI_BYTE, src,
                                DataTag::kTagPushHeader, ctx.data, &rreq[2 * w]));
      POLIS_MPI_CHECK(MPI_Irecv(recv[w].data(), cn, MPI_FLOAT, src, DataTag::kTagPushData,
                                ctx.data, &rreq[2 * w + 1]));
    }
    return Status::Ok();
  };

  // Control: the coordinator tells us to hand over our range and stop.
  bool stop = false;
  auto check_control = [&]() -> Status {
    proto::ControlMessage msg;
    Status st = comm::TryRecvControl(ctx.ctrl, ctx.coordinator_rank(), nullptr, &msg);
    if (st.code() == Code::kNotFound) return Status::Ok();
    POLIS_RETURN_IF_ERROR(st);
    if (msg.has_server_command()) {
      stop = true;
      if (msg.server_command().kind() == proto::ServerCommand::SEND_PARAMETERS_AND_STOP) {
        POLIS_MPI_CHECK(MPI_Send(params.data(), cn, MPI_FLOAT, ctx.coordinator_rank(),
                                 DataTag::kTagFinalParams, ctx.data));
      }
      return Cancelled();
    }
    return InternalError("server got an unexpected control message");
  };

  POLIS_RETURN_IF_ERROR(post_receives());
  for (int64_t step = 0;; ++step) {
    Status st = comm::WaitAll(
        2 * W, rreq.data(), comm::DeadlineFromNow(),
        [&] {
          std::string who;
          for (int w = 0; w < W; ++w) {
            int flag = 0;
            MPI_Request_get_status(rreq[2 * w + 1], &flag, MPI_STATUS_IGNORE);
            if (!flag) who += fmt::format("{}rank {} (worker)", who.empty() ? "" : ", ", ctx.worker_rank(w));
          }
          return fmt::format("step {} gradients from {}", step, who);
        },
        check_control);
    if (stop) {
      for (auto& r : rreq)
        if (r != MPI_REQUEST_NULL) {
          MPI_Cancel(&r);
          MPI_Wait(&r, MPI_STATUS_IGNORE);
        }
      POLIS_LOG(kInfo, kPs, "server {} stopping after {} steps", ctx.server_index(), step);
      return Status::Ok();
    }
    POLIS_RETURN_IF_ERROR(st);

    int64_t total = 0;
    for (int w = 0; w < W; ++w) {
      if (push[w].step != step)
        return RemoteError("rank {} (worker) pushed step {} while server {} is at step {}",
                           ctx.worker_rank(w), push[w].step, ctx.server_index(), step);
      total += push[w].samples;
    }
    if (total > 0) {
      // Workers push gradient sums; the update uses the mean over all samples.
      float* __restrict s = sum.data();
      std::memcpy(s, recv[0].data(), sizeof(float) * n);
      for (int w = 1; w < W; ++w) {
        const float* __restrict r = recv[w].data();
        for (int64_t i = 0; i < n; ++i) s[i] += r[i];
      }
      const float inv = 1.0f / static_cast<float>(total);
      for (int64_t i = 0; i < n; ++i) s[i] *= inv;
      optimizer->Step(params.data(), s);
    }
    for (int w = 0; w < W; ++w) {
      pull[w] = {step, total};
      int dst = ctx.worker_rank(w);
      POLIS_MPI_CHECK(MPI_Isend(&pull[w], sizeof(PullHeader), MPI_BYTE, dst,
                                DataTag::kTagPullHeader, ctx.data, &sreq[2 * w]));
      POLIS_MPI_CHECK(MPI_Isend(params.data(), cn, MPI_FLOAT, dst, DataTag::kTagPullData,
                                ctx.data, &sreq[2 * w + 1]));
    }
    POLIS_RETURN_IF_ERROR(post_receives());
    // The next update writes params: the sends must be done first.
    POLIS_RETURN_IF_ERROR(comm::WaitAll(2 * W, sreq.data(), comm::DeadlineFromNow(),
                                        [&] { return fmt::format("step {} replies to workers", step); }));
  }
}

}  // namespace polis::paramserver
