#include "common/comm/control.h"

#include "common/comm/wire_checks.h"
#include "common/env.h"

namespace polis::comm {

Status SendControl(Channel* channel, int dest, const proto::ControlMessage& msg) {
  std::string bytes;
  if (!msg.SerializeToString(&bytes)) return InternalError("cannot serialize control message");
  return channel->Send(bytes.data(), static_cast<int64_t>(bytes.size()), dest, kTagControl);
}

Status TryRecvControl(Channel* channel, int source, int* from, proto::ControlMessage* msg) {
  Probed probed;
  POLIS_ASSIGN_OR_RETURN(bool found, channel->Probe(source, kTagControl, &probed));
  if (!found) return NotFound("no control message");
  std::string bytes(static_cast<size_t>(probed.bytes), '\0');
  POLIS_RETURN_IF_ERROR(channel->Recv(bytes.data(), probed.bytes, probed.source, kTagControl));
  POLIS_RETURN_IF_ERROR(DecodeControl(bytes, probed.source, msg));
  if (from) *from = probed.source;
  return Status::Ok();
}

Status RecvControl(Channel* channel, int source, int* from, proto::ControlMessage* msg,
                   Clock::time_point deadline, const std::string& what) {
  Backoff backoff;
  while (true) {
    Status st = TryRecvControl(channel, source, from, msg);
    if (st.ok() || st.code() != Code::kNotFound) return st;
    if (Clock::now() > deadline)
      return Timeout("no message after {} s waiting for {}", env::TimeoutSeconds(), what);
    backoff.Pause();
  }
}

}  // namespace polis::comm
