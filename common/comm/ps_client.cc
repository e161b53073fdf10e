#include "common/comm/ps_client.h"

#include <algorithm>

#include "common/comm/control.h"
#include "common/comm/wire_checks.h"
#include "common/env.h"

namespace polis::comm {

PsClient::PsClient(Channel* data, std::vector<int> server_ranks, std::vector<KeyRange> ranges,
                   std::vector<Piece> pieces, Channel* ctrl, int coordinator)
    : data_(data), ctrl_(ctrl), coordinator_(coordinator), servers_(std::move(server_ranks)),
      ranges_(std::move(ranges)), pieces_(std::move(pieces)), push_(servers_.size()), pull_(servers_.size()),
      round_reqs_(2 * servers_.size() + pieces_.size()), pull_reqs_(pieces_.size()), pushed_(pieces_.size(), 0) {
  POLIS_ENFORCE_EQ(servers_.size(), ranges_.size());
  for (const Piece& p : pieces_) {
    POLIS_ENFORCE_LT(p.server, static_cast<int>(servers_.size()));
    POLIS_ENFORCE_LT(p.slot, kMaxPiecesPerServer);
  }
}

PsClient::~PsClient() {
  data_->Cancel(round_reqs_.data(), static_cast<int>(servers_.size()));  // the reply headers
  data_->Cancel(pull_reqs_.data(), static_cast<int>(pull_reqs_.size()));
}

Status PsClient::Push(int k, const float* grads) { return PushBytes(k, grads); }

Status PsClient::Push(int k, const uint32_t* payload) {
  static_assert(sizeof(uint32_t) == sizeof(float));
  return PushBytes(k, payload);
}

// Elements are 4 bytes either way (floats, or masked fixed point).
Status PsClient::PushBytes(int k, const void* base) {
  POLIS_ENFORCE_EQ(pushed_[k], 0);
  POLIS_ENFORCE(base != nullptr);
  const Piece& p = pieces_[k];
  pushed_[k] = 1;
  return data_->Isend(static_cast<const char*>(base) + sizeof(float) * p.begin, sizeof(float) * p.size(),
                      servers_[p.server], kTagPushPieceBase + p.slot, &round_reqs_[2 * servers_.size() + k]);
}

StatusOr<int64_t> PsClient::Finish(const PushHeader& header, const float* grads, float* params) {
  POLIS_ENFORCE_EQ(pending_, -1);
  POLIS_RETURN_IF_ERROR(WaitPulls());
  for (size_t k = 0; k < pieces_.size(); ++k)
    if (!pushed_[k]) POLIS_RETURN_IF_ERROR(Push(static_cast<int>(k), grads));
  // Receives first, so the reply lands straight in `params`.
  const size_t S = servers_.size();
  for (size_t k = 0; k < pieces_.size(); ++k) {
    const Piece& p = pieces_[k];
    POLIS_RETURN_IF_ERROR(data_->Irecv(params + p.begin, sizeof(float) * p.size(), servers_[p.server],
                                       kTagPullPieceBase + p.slot, &pull_reqs_[k]));
  }
  pulls_pending_ = !pieces_.empty();
  for (size_t s = 0; s < S; ++s) {
    push_[s] = header;
    POLIS_RETURN_IF_ERROR(data_->Irecv(&pull_[s], sizeof(PullHeader), servers_[s], kTagPullHeader, &round_reqs_[s]));
    POLIS_RETURN_IF_ERROR(data_->Isend(&push_[s], sizeof(PushHeader), servers_[s], kTagPushHeader, &round_reqs_[S + s]));
  }
  pending_ = header.step;
  round_open_ = true;
  return header.step;
}

Status PsClient::PollControl() {
  if (ctrl_ == nullptr) return Status::Ok();
  proto::ControlMessage msg;
  Status st = TryRecvControl(ctrl_, coordinator_, nullptr, &msg);
  if (st.code() == Code::kNotFound) return Status::Ok();
  POLIS_RETURN_IF_ERROR(st);
  if (msg.has_server_command()) return Cancelled();
  return RemoteError("unexpected control message while waiting for servers");
}

Status PsClient::WaitHeaders(int64_t ts, PullHeader* reply) {
  POLIS_ENFORCE_EQ(pending_, ts);
  pending_ = -1;
  POLIS_RETURN_IF_ERROR(WaitAll(
      data_, round_reqs_.data(), static_cast<int>(round_reqs_.size()), DeadlineFromNow(),
      [&] { return fmt::format("the answer to push {} from {}", ts, Unanswered()); },
      [&] { return PollControl(); }));
  round_open_ = false;
  std::fill(pushed_.begin(), pushed_.end(), 0);
  for (size_t s = 0; s < servers_.size(); ++s) POLIS_RETURN_IF_ERROR(CheckPullHeader(pull_[s], servers_[s]));
  for (size_t s = 0; s < servers_.size(); ++s) {
    if (!Stopped(static_cast<int>(s))) continue;
    DropPieces(static_cast<int>(s));
    return Cancelled();  // the server is stopping
  }
  for (size_t s = 1; s < servers_.size(); ++s) {
    if (pull_[s].flags != pull_[0].flags)
      return RemoteError("rank {} (server) answered with flags {} but rank {} with {}", servers_[s],
                         pull_[s].flags, servers_[0], pull_[0].flags);
  }
  *reply = pull_[0];
  return Status::Ok();
}

Status PsClient::WaitPieces(const int* ids, int n) {
  Backoff backoff;
  const auto deadline = DeadlineFromNow();
  while (true) {
    bool all = true;
    for (int i = 0; i < n; ++i) {
      bool done = false;
      POLIS_RETURN_IF_ERROR(data_->Test(&pull_reqs_[ids[i]], 1, &done));
      all &= done;
    }
    if (all) return Status::Ok();
    if (Clock::now() > deadline) {
      std::string who;
      for (int i = 0; i < n; ++i)
        if (pull_reqs_[ids[i]].pending())
          who += fmt::format("{}piece {} from rank {} (server)", who.empty() ? "" : ", ", ids[i],
                             servers_[pieces_[ids[i]].server]);
      return Timeout("no progress after {} s waiting for parameters: {}", env::TimeoutSeconds(), who);
    }
    backoff.Pause();
  }
}

Status PsClient::WaitPulls() {
  if (!pulls_pending_) return Status::Ok();
  POLIS_RETURN_IF_ERROR(WaitAll(
      data_, pull_reqs_.data(), static_cast<int>(pull_reqs_.size()), DeadlineFromNow(), [&] {
        std::string who;
        for (size_t k = 0; k < pieces_.size(); ++k)
          if (pull_reqs_[k].pending())
            who += fmt::format("{}piece {} from rank {} (server)", who.empty() ? "" : ", ", k,
                               servers_[pieces_[k].server]);
        return "parameters: " + who;
      }));
  pulls_pending_ = false;
  return Status::Ok();
}

// The servers whose answer to the round has not come, for a wait's message.
std::string PsClient::Unanswered() const {
  std::string who;
  for (size_t s = 0; s < servers_.size(); ++s)
    if (round_reqs_[s].pending()) who += fmt::format("{}rank {} (server)", who.empty() ? "" : ", ", servers_[s]);
  return who.empty() ? "no server (sends pending)" : who;
}

// A stopping server sends no pieces with its answer: their receives are
// withdrawn (nothing can match them).
void PsClient::DropPieces(int server) {
  for (size_t k = 0; k < pieces_.size(); ++k)
    if (pieces_[k].server == server) data_->Cancel(&pull_reqs_[k], 1);
}

Status PsClient::Leave() {
  if (left_) return Status::Ok();
  left_ = true;
  const size_t S = servers_.size();
  if (round_open_) {
    // Every server answers every push it receives, a stopping one too.
    POLIS_RETURN_IF_ERROR(WaitAll(data_, round_reqs_.data(), static_cast<int>(round_reqs_.size()), DeadlineFromNow(),
                                  [&] { return "the answer to the last push (leaving) from " + Unanswered(); }));
    round_open_ = false;
    std::fill(pushed_.begin(), pushed_.end(), 0);
  } else if (std::find(pushed_.begin(), pushed_.end(), 1) != pushed_.end()) {
    return InternalError("a worker left with pieces of a push sent but not its header");
  }
  for (size_t s = 0; s < S; ++s)
    if (Stopped(static_cast<int>(s))) DropPieces(static_cast<int>(s));
  POLIS_RETURN_IF_ERROR(WaitPulls());
  std::vector<PushHeader> bye(S);
  std::vector<Request> sends(S);
  for (size_t s = 0; s < S; ++s) {
    bye[s].flags = kPushLeave;
    POLIS_RETURN_IF_ERROR(data_->Isend(&bye[s], sizeof(PushHeader), servers_[s], kTagPushHeader, &sends[s]));
  }
  return WaitAll(data_, sends.data(), static_cast<int>(S), DeadlineFromNow(),
                 [] { return std::string("the servers to take this worker's goodbye"); });
}

StatusOr<int64_t> PsClient::PushPull(const PushHeader& header, const float* grads, float* params) {
  return Finish(header, grads, params);
}

Status PsClient::Wait(int64_t ts, PullHeader* reply) {
  POLIS_RETURN_IF_ERROR(WaitHeaders(ts, reply));
  return WaitPulls();
}

}  // namespace polis::comm
