#include "common/comm/channel.h"

#include "common/env.h"

namespace polis::comm {

Status Channel::WaitBlocking(Request* reqs, int n) {
  Backoff backoff;
  while (true) {
    bool done = false;
    POLIS_RETURN_IF_ERROR(Test(reqs, n, &done));
    if (done) return Status::Ok();
    backoff.Pause();
  }
}

Status WaitAll(Channel* channel, Request* reqs, int n, Clock::time_point deadline,
               const std::function<std::string()>& what, const std::function<Status()>& idle) {
  if (SingleThreaded()) return channel->WaitBlocking(reqs, n);
  Backoff backoff;
  while (true) {
    bool done = false;
    POLIS_RETURN_IF_ERROR(channel->Test(reqs, n, &done));
    if (done) return Status::Ok();
    if (idle) POLIS_RETURN_IF_ERROR(idle());
    if (Clock::now() > deadline)
      return Timeout("no progress after {} s waiting for {}", env::TimeoutSeconds(), what());
    backoff.Pause();
  }
}

}  // namespace polis::comm
