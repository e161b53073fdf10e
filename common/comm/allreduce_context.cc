#include "common/comm/allreduce_context.h"

#ifdef POLIS_SMPI
#include "common/comm/allreduce_kernels.h"
#endif

#include <sys/mman.h>
#include <sys/prctl.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include <fmt/ranges.h>

#include "common/env.h"
#include "common/log.h"

namespace polis::comm::internal {
namespace {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Linux stretches every sleep of a normal thread by its timer slack (50 µs
// by default), which would turn the back-off's first 5 µs naps into 55 µs
// ones: on a shared core that is most of a small collective. The calling
// (communication) thread asks for 1 µs instead, once.
void PreciseSleeps() {
  thread_local bool done = false;
  if (done) return;
  done = true;
#ifdef PR_SET_TIMERSLACK
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
#endif
}

}  // namespace

#ifdef POLIS_SMPI
// Simulation build: memory folding (docs/design/simulation.md).
ScratchBuffer::~ScratchBuffer() {
  if (data_) SMPI_SHARED_FREE(data_);
}

bool ScratchBuffer::Reserve(size_t bytes) {
  if (bytes <= capacity_) return false;
  if (data_) SMPI_SHARED_FREE(data_);
  const size_t len = (bytes + 4095) / 4096 * 4096;
  data_ = static_cast<std::byte*>(SMPI_SHARED_MALLOC(len));
  POLIS_ENFORCE(data_ != nullptr);
  if (internal::Arithmetic()) std::memset(data_, 0, len);
  capacity_ = mapped_ = len;
  return true;
}
#else
ScratchBuffer::~ScratchBuffer() {
  if (data_) munmap(data_, mapped_);
}

bool ScratchBuffer::Reserve(size_t bytes) {
  if (bytes <= capacity_) return false;
  if (data_) munmap(data_, mapped_);
  data_ = nullptr;
  capacity_ = mapped_ = 0;
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t len = (bytes + 4095) / 4096 * 4096;
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  POLIS_ENFORCE(p != MAP_FAILED);  // out of address space: nothing sensible to return
  // Huge pages: fewer faults and TLB misses on the big copies (madvise mode
  // on Debian; a no-op where THP is off).
  if (len >= kHuge) madvise(p, len, MADV_HUGEPAGE);
  std::memset(p, 0, len);  // fault every page in now, not in the first collective
  data_ = static_cast<std::byte*>(p);
  capacity_ = mapped_ = len;
  return true;
}
#endif

CollectiveContext::CollectiveContext(MPI_Comm comm) : comm_(comm) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  spin_ = std::chrono::microseconds(env::CommSpinMicros());
  deadline_ = DeadlineFromNow();
}

CollectiveContext::~CollectiveContext() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void CollectiveContext::BeginCall(const CallInfo& info) {
  ++seq_;
  info_ = info;
  deadline_ = DeadlineFromNow();
}

std::string CollectiveContext::Describe() const {
  std::string what;
  if (std::strcmp(info_.op, "Allreduce") == 0) {
    what = fmt::format("Allreduce({}, {}, {} floats)", AllreduceAlgorithmName(info_.algorithm),
                       WireTypeName(info_.wire), info_.count);
  } else if (info_.count >= 0) {
    what = fmt::format("{}({} bytes)", info_.op, info_.count);
  } else {
    what = fmt::format("{}()", info_.op);
  }
  if (!scope_.empty())
    return fmt::format("{} call #{} on rank {} ({}, {} ranks)", what, seq_.load(), Name(rank_),
                       scope_, size_);
  return fmt::format("{} call #{} on rank {} of {}", what, seq_.load(), rank_, size_);
}

void CollectiveContext::SetScope(std::string scope, std::vector<int> parent_ranks) {
  scope_ = std::move(scope);
  parent_ranks_ = std::move(parent_ranks);
}

Status CollectiveContext::AnswerAllStallQueries() {
  POLIS_RETURN_IF_ERROR(AnswerStallQueries());
  for (CollectiveContext* other : others_) POLIS_RETURN_IF_ERROR(other->AnswerStallQueries());
  return Status::Ok();
}

Status CollectiveContext::Wait(int n, MPI_Request* reqs, const int* peers, const bool* sends) {
  // Single-threaded mode (common/comm/wait.h): block in MPI, no deadline.
  if (SingleThreaded()) {
    POLIS_MPI_CHECK(MPI_Waitall(n, reqs, MPI_STATUSES_IGNORE));
    return Status::Ok();
  }
  int done = 0;
  POLIS_MPI_CHECK(MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE));
  if (done) return Status::Ok();
  // Phase 1: the answer is usually microseconds away: poll for a bounded
  // time. (No sched_yield between polls: under EEVDF a yield hands the rest
  // of the slice to whatever else is runnable, milliseconds on a busy core;
  // measured no better with 4 ranks on 2 cores either.)
  const Clock::time_point spin_end = Clock::now() + spin_;
  while (Clock::now() < spin_end) {
    for (int i = 0; i < 16; ++i) CpuRelax();
    POLIS_MPI_CHECK(MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE));
    if (done) return Status::Ok();
  }
  // Phase 2: sleep with back-off, answer stall queries, watch the deadline.
  PreciseSleeps();
  Backoff backoff;
  while (true) {
    POLIS_MPI_CHECK(MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE));
    if (done) return Status::Ok();
    POLIS_RETURN_IF_ERROR(AnswerAllStallQueries());
    if (Clock::now() > deadline_) return TimeoutStatus(n, reqs, peers, sends);
    backoff.Pause();
  }
}

Status CollectiveContext::AnswerStallQueries() {
  // A probe and its receive must not interleave with another thread's.
  std::unique_lock<std::mutex> lock(answering_, std::try_to_lock);
  if (!lock.owns_lock()) return Status::Ok();
  while (true) {
    int flag = 0;
    MPI_Status st;
    POLIS_MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, kTagStallQuery, comm_, &flag, &st));
    if (!flag) return Status::Ok();
    int64_t query = 0;
    POLIS_MPI_CHECK(MPI_Recv(&query, 1, MPI_INT64_T, st.MPI_SOURCE, kTagStallQuery, comm_,
                             MPI_STATUS_IGNORE));
    // 8 bytes: eager, so MPI_Send returns at once even if the asker has gone.
    const int64_t seq = seq_.load(std::memory_order_relaxed);
    POLIS_MPI_CHECK(MPI_Send(&seq, 1, MPI_INT64_T, st.MPI_SOURCE, kTagStallReply, comm_));
  }
}

std::vector<int> CollectiveContext::RanksNotInCall() {
  // Peers time out at slightly different moments (each from its own start):
  // keep asking and answering long enough for every live peer to answer.
  const auto grace = std::clamp<Clock::duration>(
      std::chrono::milliseconds(env::TimeoutSeconds() * 1000) / 4, std::chrono::milliseconds(200),
      std::chrono::seconds(5));
  std::vector<int64_t> replies(size_, -1);
  std::vector<MPI_Request> sends(size_, MPI_REQUEST_NULL), recvs(size_, MPI_REQUEST_NULL);
  stall_query_ = seq_.load();
  const int64_t query = stall_query_;
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    MPI_Isend(&stall_query_, 1, MPI_INT64_T, p, kTagStallQuery, comm_, &sends[p]);
    MPI_Irecv(&replies[p], 1, MPI_INT64_T, p, kTagStallReply, comm_, &recvs[p]);
  }
  const Clock::time_point end = Clock::now() + grace;
  Backoff backoff;
  while (Clock::now() < end) {
    int done = 0;
    MPI_Testall(size_, recvs.data(), &done, MPI_STATUSES_IGNORE);
    if (done) break;
    (void)AnswerAllStallQueries();
    backoff.Pause();
  }
  std::unique_ptr<bool[]> all_sends(new bool[size_]), no_sends(new bool[size_]);
  std::fill_n(all_sends.get(), size_, true);
  std::fill_n(no_sends.get(), size_, false);
  Abandon(size_, recvs.data(), no_sends.get());
  Abandon(size_, sends.data(), all_sends.get());
  std::vector<int> missing;
  for (int p = 0; p < size_; ++p)
    if (p != rank_ && replies[p] < query) missing.push_back(Name(p));
  return missing;
}

Status CollectiveContext::TimeoutStatus(int n, MPI_Request* reqs, const int* peers,
                                        const bool* sends) {
  std::string waiting;
  for (int i = 0; i < n; ++i) {
    if (reqs[i] == MPI_REQUEST_NULL) continue;
    int flag = 0;
    MPI_Request_get_status(reqs[i], &flag, MPI_STATUS_IGNORE);
    if (flag) continue;
    if (!waiting.empty()) waiting += ", ";
    if (peers[i] == kCollectivePeer) {
      waiting += "the other ranks";
    } else {
      waiting += fmt::format("{} rank {}", sends[i] ? "send to" : "receive from", Name(peers[i]));
    }
  }
  if (waiting.empty()) waiting = "its requests";
  const std::vector<int> missing = RanksNotInCall();
  std::string stall;
  if (missing.empty()) {
    stall = fmt::format("every peer has entered call #{} (one may be stuck inside it)",
                        seq_.load());
  } else {
    stall = fmt::format("peers that have not entered call #{}: {} {}", seq_.load(),
                        missing.size() == 1 ? "rank" : "ranks", fmt::join(missing, ", "));
  }
  Status st = Timeout("{}: no progress after {} s waiting for {}; {}", Describe(),
                      env::TimeoutSeconds(), waiting, stall);
  POLIS_LOG(kWarn, kNet, "{}", st.message());
  return st;
}

void CollectiveContext::Abandon(int n, MPI_Request* reqs, const bool* sends) {
  for (int i = 0; i < n; ++i) {
    if (reqs[i] == MPI_REQUEST_NULL) continue;
    int flag = 0;
    MPI_Test(&reqs[i], &flag, MPI_STATUS_IGNORE);
    if (flag || reqs[i] == MPI_REQUEST_NULL) continue;
    if (sends == nullptr) {
      reqs[i] = MPI_REQUEST_NULL;  // a collective's: MPI cannot cancel it
    } else if (sends[i]) {
      MPI_Cancel(&reqs[i]);
      MPI_Request_free(&reqs[i]);
    } else {
      MPI_Cancel(&reqs[i]);  // local for a receive: completes at once
      MPI_Wait(&reqs[i], MPI_STATUS_IGNORE);
    }
  }
}

}  // namespace polis::comm::internal
