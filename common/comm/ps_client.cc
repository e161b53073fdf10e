#include "common/comm/ps_client.h"

#include "common/comm/mpi_util.h"

namespace polis::comm {

PsClient::PsClient(MPI_Comm data, std::vector<int> server_ranks, std::vector<KeyRange> ranges)
    : data_(data), servers_(std::move(server_ranks)), ranges_(std::move(ranges)),
      push_(servers_.size()), pull_(servers_.size()),
      reqs_(4 * servers_.size(), MPI_REQUEST_NULL) {
  POLIS_ENFORCE_EQ(servers_.size(), ranges_.size());
}

StatusOr<int64_t> PsClient::PushPull(int64_t step, int64_t samples, const float* grads,
                                     float* params) {
  POLIS_ENFORCE_EQ(pending_, -1);
  for (size_t s = 0; s < servers_.size(); ++s) {
    const KeyRange& r = ranges_[s];
    const int count = static_cast<int>(r.size());
    push_[s] = {step, samples};
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

Status PsClient::Wait(int64_t ts, int64_t* total_samples) {
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
        return fmt::format("step {} parameters from {}", ts, who);
      }));
  int64_t total = pull_[0].total_samples;
  for (size_t s = 0; s < servers_.size(); ++s) {
    if (pull_[s].step != ts || pull_[s].total_samples != total)
      return RemoteError("rank {} (server) answered step {} with {} samples; expected step {} with {}",
                         servers_[s], pull_[s].step, pull_[s].total_samples, ts, total);
  }
  *total_samples = total;
  return Status::Ok();
}

}  // namespace polis::comm
