#include "common/comm/mpi_util.h"

#include <time.h>

#include "common/comm/wire_checks.h"
#include "common/env.h"

namespace polis::comm {

Status MpiStatus(int rc, const char* expr, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  return RemoteError("{} failed at {}:{}: {}", expr, file, line, std::string(text, len));
}

void Backoff::Pause() {
  // A few cheap polls first (the answer is often already there), then sleep,
  // doubling up to the cap.
  if (spins_ < 4) {
    ++spins_;
    return;
  }
  sleep_us_ = sleep_us_ == 0 ? 5 : std::min(sleep_us_ * 2, std::max(env::IdleMaxMicros(), 5));
  timespec ts{0, static_cast<long>(sleep_us_) * 1000};
  nanosleep(&ts, nullptr);
}

Clock::time_point DeadlineFromNow() {
  return Clock::now() + std::chrono::seconds(env::TimeoutSeconds());
}

Status WaitAll(int n, MPI_Request* reqs, Clock::time_point deadline,
               const std::function<std::string()>& what, const std::function<Status()>& idle) {
  Backoff backoff;
  while (true) {
    int done = 0;
    POLIS_MPI_CHECK(MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE));
    if (done) return Status::Ok();
    if (idle) POLIS_RETURN_IF_ERROR(idle());
    if (Clock::now() > deadline)
      return Timeout("no progress after {} s waiting for {}", env::TimeoutSeconds(), what());
    backoff.Pause();
  }
}

Status SendControl(MPI_Comm comm, int dest, const proto::ControlMessage& msg) {
  std::string bytes;
  if (!msg.SerializeToString(&bytes)) return InternalError("cannot serialize control message");
  POLIS_MPI_CHECK(MPI_Send(bytes.data(), static_cast<int>(bytes.size()), MPI_BYTE, dest,
                           kTagControl, comm));
  return Status::Ok();
}

Status TryRecvControl(MPI_Comm comm, int source, int* from, proto::ControlMessage* msg) {
  int flag = 0;
  MPI_Status st;
  POLIS_MPI_CHECK(MPI_Iprobe(source, kTagControl, comm, &flag, &st));
  if (!flag) return NotFound("no control message");
  int count = 0;
  POLIS_MPI_CHECK(MPI_Get_count(&st, MPI_BYTE, &count));
  std::string bytes(static_cast<size_t>(count), '\0');
  POLIS_MPI_CHECK(MPI_Recv(bytes.data(), count, MPI_BYTE, st.MPI_SOURCE, kTagControl, comm,
                           MPI_STATUS_IGNORE));
  POLIS_RETURN_IF_ERROR(DecodeControl(bytes, st.MPI_SOURCE, msg));
  if (from) *from = st.MPI_SOURCE;
  return Status::Ok();
}

Status RecvControl(MPI_Comm comm, int source, int* from, proto::ControlMessage* msg,
                   Clock::time_point deadline, const std::string& what) {
  Backoff backoff;
  while (true) {
    Status st = TryRecvControl(comm, source, from, msg);
    if (st.ok() || st.code() != Code::kNotFound) return st;
    if (Clock::now() > deadline)
      return Timeout("no message after {} s waiting for {}", env::TimeoutSeconds(), what);
    backoff.Pause();
  }
}

}  // namespace polis::comm
