#include "common/comm/ps_client.h"

#include "common/comm/mpi_util.h"

namespace polis::comm {

PsClient::PsClient(MPI_Comm data, std::vector<int> server_ranks, std::vector<KeyRange> ranges,
                   MPI_Comm ctrl, int coordinator)
    : data_(data), ctrl_(ctrl), coordinator_(coordinator), servers_(std::move(server_ranks)), ranges_(std::move(ranges)),
      push_(servers_.size()), pull_(servers_.size()),
      reqs_(4 * servers_.size(), MPI_REQUEST_NULL) {
  POLIS_ENFORCE_EQ(servers_.size(), ranges_.size());
}

StatusOr<int64_t> PsClient::PushPull(const PushHeader& header, const float* grads, float* params) {
  POLIS_ENFORCE_EQ(pending_, -1);
  const int64_t step = header.step;
  for (size_t s = 0; s < servers_.size(); ++s) {
    const KeyRange& r = ranges_[s];
    const int count = static_cast<int>(r.size());
    push_[s] = header;
    MPI_Request* q = &reqs_[4 * s];
    // Post the receives first so the replies land straight in `params`.
    POLIS_MPI_CHECK(MPI_Irecv(&pull_[s], sizeof(PullHeader), MPI_BYTE, servers_[s],
                              kTagPullHeader, data_, &q[0]));
    POLIS_MPI_CHECK(MPI_Irecv(params + r.begin, count, MPI_FLOAT, servers_[s], kTagPullData,
                              data_, &q[1]));
    POLIS_MPI_CHECK(MPI_Isend(&push_[s], sizeof(PushHeader), MPI_BYTE, servers_[s],
                              kTagPushHeader, data_, &q[2]));
    POLIS_MPI_CHECK(MPI_Isend(grads + r.begin, count, MPI_FLOAT, servers_[s], kTagPushData,
                              data_, &q[3]));
  }
  pending_ = step;
  return step;
}

Status PsClient::Wait(int64_t ts, PullHeader* reply) {
  POLIS_ENFORCE_EQ(pending_, ts);
  pending_ = -1;
  POLIS_RETURN_IF_ERROR(WaitAll(
      static_cast<int>(reqs_.size()), reqs_.data(), DeadlineFromNow(), [&] {
        std::string who;
        for (size_t s = 0; s < servers_.size(); ++s) {
          int flag = 0;
          MPI_Request_get_status(reqs_[4 * s + 1], &flag, MPI_STATUS_IGNORE);
          if (!flag) who += fmt::format("{}rank {} (server)", who.empty() ? "" : ", ", servers_[s]);
        }
        return fmt::format("the answer to push {} from {}", ts, who);
      },
      [&]() -> Status {
        if (ctrl_ == MPI_COMM_NULL) return Status::Ok();
        int flag = 0;
        POLIS_MPI_CHECK(MPI_Iprobe(coordinator_, kTagControl, ctrl_, &flag, MPI_STATUS_IGNORE));
        if (!flag) return Status::Ok();
        proto::ControlMessage msg;
        POLIS_RETURN_IF_ERROR(TryRecvControl(ctrl_, coordinator_, nullptr, &msg));
        if (msg.has_server_command()) return Cancelled();
        return RemoteError("unexpected control message while waiting for servers");
      }));
  for (size_t s = 1; s < servers_.size(); ++s) {
    if (pull_[s].flags != pull_[0].flags)
      return RemoteError("rank {} (server) answered with flags {} but rank {} with {}", servers_[s],
                         pull_[s].flags, servers_[0], pull_[0].flags);
  }
  *reply = pull_[0];
  return Status::Ok();
}

}  // namespace polis::comm
