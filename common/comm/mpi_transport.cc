#include "common/comm/mpi_transport.h"

#include <climits>
#include <cstring>
#include <vector>

#include "common/comm/mpi_communicator.h"
#include "common/comm/mpi_util.h"

namespace polis::comm {
namespace {

static_assert(sizeof(MPI_Request) <= sizeof(uint64_t), "an MPI_Request must fit a Request handle");

// A Request holds the MPI_Request's bits; 0 stands for MPI_REQUEST_NULL
// (which in Open MPI is the address of a static object, not 0).
MPI_Request ToMpi(const Request& r) {
  if (!r.pending()) return MPI_REQUEST_NULL;
  MPI_Request m;
  uint64_t h = r.handle();
  std::memcpy(&m, &h, sizeof(m));
  return m;
}
void FromMpi(MPI_Request m, Request* r) {
  uint64_t h = 0;
  if (m != MPI_REQUEST_NULL) std::memcpy(&h, &m, sizeof(m));
  r->set_handle(h);
}

Status CheckCount(int64_t bytes) {
  if (bytes < 0 || bytes > INT_MAX)
    return InvalidArgument("a message of {} bytes: one message carries at most {} bytes", bytes, INT_MAX);
  return Status::Ok();
}

int MpiSource(int source) { return source == kAnySource ? MPI_ANY_SOURCE : source; }

class MpiChannel final : public Channel {
 public:
  explicit MpiChannel(MPI_Comm comm) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  Status Isend(const void* buf, int64_t bytes, int dest, int tag, Request* req) override {
    POLIS_RETURN_IF_ERROR(CheckCount(bytes));
    MPI_Request m;
    POLIS_MPI_CHECK(MPI_Isend(buf, static_cast<int>(bytes), MPI_BYTE, dest, tag, comm_, &m));
    FromMpi(m, req);
    return Status::Ok();
  }
  Status Irecv(void* buf, int64_t bytes, int source, int tag, Request* req) override {
    POLIS_RETURN_IF_ERROR(CheckCount(bytes));
    MPI_Request m;
    POLIS_MPI_CHECK(MPI_Irecv(buf, static_cast<int>(bytes), MPI_BYTE, MpiSource(source), tag, comm_, &m));
    FromMpi(m, req);
    return Status::Ok();
  }
  // One MPI_Testsome (one pass of MPI's progress engine) for the whole set;
  // the completed requests come back as MPI_REQUEST_NULL.
  Status Test(Request* reqs, int n, bool* all_done) override {
    std::vector<MPI_Request>& mpi = mpi_;
    std::vector<int>& indices = indices_;
    mpi.resize(static_cast<size_t>(n));
    indices.resize(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) mpi[i] = ToMpi(reqs[i]);
    int completed = 0;
    POLIS_MPI_CHECK(MPI_Testsome(n, mpi.data(), &completed, indices.data(), MPI_STATUSES_IGNORE));
    bool done = true;
    for (int i = 0; i < n; ++i) {
      FromMpi(mpi[i], &reqs[i]);
      done &= !reqs[i].pending();
    }
    *all_done = done;
    return Status::Ok();
  }
  // The single-threaded mode's wait: one MPI_Waitall.
  Status WaitBlocking(Request* reqs, int n) override {
    std::vector<MPI_Request>& mpi = mpi_;
    mpi.resize(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) mpi[i] = ToMpi(reqs[i]);
    const int rc = MPI_Waitall(n, mpi.data(), MPI_STATUSES_IGNORE);
    for (int i = 0; i < n; ++i) FromMpi(mpi[i], &reqs[i]);
    POLIS_MPI_CHECK(rc);
    return Status::Ok();
  }
  void Cancel(Request* reqs, int n) override {
    for (int i = 0; i < n; ++i) {
      if (!reqs[i].pending()) continue;
      MPI_Request m = ToMpi(reqs[i]);
      MPI_Cancel(&m);
      MPI_Wait(&m, MPI_STATUS_IGNORE);
      reqs[i] = Request();
    }
  }
  StatusOr<bool> Probe(int source, int tag, Probed* found) override {
    int flag = 0;
    MPI_Status st;
    POLIS_MPI_CHECK(MPI_Iprobe(MpiSource(source), tag, comm_, &flag, &st));
    if (!flag) return false;
    int count = 0;
    POLIS_MPI_CHECK(MPI_Get_count(&st, MPI_BYTE, &count));
    found->source = st.MPI_SOURCE;
    found->bytes = count;
    return true;
  }
  Status Send(const void* buf, int64_t bytes, int dest, int tag) override {
    POLIS_RETURN_IF_ERROR(CheckCount(bytes));
    POLIS_MPI_CHECK(MPI_Send(buf, static_cast<int>(bytes), MPI_BYTE, dest, tag, comm_));
    return Status::Ok();
  }
  Status Recv(void* buf, int64_t bytes, int source, int tag) override {
    POLIS_RETURN_IF_ERROR(CheckCount(bytes));
    POLIS_MPI_CHECK(
        MPI_Recv(buf, static_cast<int>(bytes), MPI_BYTE, MpiSource(source), tag, comm_, MPI_STATUS_IGNORE));
    return Status::Ok();
  }

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 0;
  // Test's and WaitBlocking's request arrays, reused: members rather than
  // thread_local, so that the simulated ranks of an SMPI run (one OS thread)
  // never share them.
  std::vector<MPI_Request> mpi_;
  std::vector<int> indices_;
};

class MpiTransport final : public Transport {
 public:
  ~MpiTransport() override {
    control_.reset();
    data_.reset();
    for (MPI_Comm* c : {&ctrl_comm_, &data_comm_, &workers_comm_})
      if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
  }
  Status Init(MPI_Comm world, bool is_worker) {
    int rank = 0;
    MPI_Comm_rank(world, &rank);
    // Workers: all-reduce only; the collective split comes first, as
    // before every rank's duplicates.
    POLIS_MPI_CHECK(MPI_Comm_split(world, is_worker ? 1 : MPI_UNDEFINED, rank, &workers_comm_));
    POLIS_MPI_CHECK(MPI_Comm_dup(world, &ctrl_comm_));
    POLIS_MPI_CHECK(MPI_Comm_dup(world, &data_comm_));
    POLIS_MPI_CHECK(MPI_Comm_set_errhandler(ctrl_comm_, MPI_ERRORS_RETURN));
    POLIS_MPI_CHECK(MPI_Comm_set_errhandler(data_comm_, MPI_ERRORS_RETURN));
    control_ = MakeMpiChannel(ctrl_comm_);
    data_ = MakeMpiChannel(data_comm_);
    return Status::Ok();
  }
  Channel* control() override { return control_.get(); }
  Channel* data() override { return data_.get(); }
  MPI_Comm workers_comm() const { return workers_comm_; }
  bool ConcurrentCalls() const override {
    int level = MPI_THREAD_SINGLE;
    return MPI_Query_thread(&level) == MPI_SUCCESS && level == MPI_THREAD_MULTIPLE;
  }
  // The workers before this one (in rank order) whose processor name is
  // this one's: an allgather of the names over the workers, no new
  // communicator. Collective over the workers; computed once.
  int LocalWorkerIndex() override {
    if (local_worker_ >= 0 || workers_comm_ == MPI_COMM_NULL) return local_worker_;
    char name[MPI_MAX_PROCESSOR_NAME] = {};
    int len = 0, me = 0, n = 0;
    if (MPI_Get_processor_name(name, &len) != MPI_SUCCESS || MPI_Comm_rank(workers_comm_, &me) != MPI_SUCCESS ||
        MPI_Comm_size(workers_comm_, &n) != MPI_SUCCESS)
      return -1;
    std::vector<char> all(static_cast<size_t>(n) * MPI_MAX_PROCESSOR_NAME);
    if (MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR,
                      workers_comm_) != MPI_SUCCESS)
      return -1;
    int index = 0;
    for (int r = 0; r < me; ++r)
      if (std::strncmp(all.data() + static_cast<size_t>(r) * MPI_MAX_PROCESSOR_NAME, name, MPI_MAX_PROCESSOR_NAME) == 0)
        ++index;
    local_worker_ = index;
    return local_worker_;
  }

  StatusOr<std::unique_ptr<Communicator>> WorkersCommunicator(int64_t max_count,
                                                              const std::vector<int>& host_of_rank) override {
    if (workers_comm_ == MPI_COMM_NULL) return FailedPrecondition("only workers take part in all-reduce");
    return MakeMpiCommunicator(workers_comm_, max_count, host_of_rank);
  }

 private:
  MPI_Comm ctrl_comm_ = MPI_COMM_NULL, data_comm_ = MPI_COMM_NULL, workers_comm_ = MPI_COMM_NULL;
  int local_worker_ = -1;
  std::unique_ptr<Channel> control_, data_;
};

}  // namespace

StatusOr<MPI_Comm> WorkersMpiComm(Transport& transport) {
  auto* mpi = dynamic_cast<MpiTransport*>(&transport);
  if (mpi == nullptr) return FailedPrecondition("device collectives need the MPI transport");
  if (mpi->workers_comm() == MPI_COMM_NULL) return FailedPrecondition("only workers take part in all-reduce");
  return mpi->workers_comm();
}

std::unique_ptr<Channel> MakeMpiChannel(MPI_Comm comm) { return std::make_unique<MpiChannel>(comm); }

StatusOr<std::unique_ptr<Transport>> MakeMpiTransport(MPI_Comm world, bool is_worker) {
  auto t = std::make_unique<MpiTransport>();
  POLIS_RETURN_IF_ERROR(t->Init(world, is_worker));
  return std::unique_ptr<Transport>(std::move(t));
}

}  // namespace polis::comm
