// Control messages: a serialized ControlMessage (common/proto/control.proto)
// on a channel, tag kTagControl. Every received message is decoded and
// checked for parse errors naming its sender (common/comm/wire_checks.h).
#pragma once

#include <string>

#include "common/comm/channel.h"
#include "common/proto/control.pb.h"
#include "common/status.h"

namespace polis::comm {

Status SendControl(Channel* channel, int dest, const proto::ControlMessage& msg);
// NotFound if no message from `source` (or kAnySource) is waiting.
Status TryRecvControl(Channel* channel, int source, int* from, proto::ControlMessage* msg);
// Blocks (with back-off) until a message from `source` (or kAnySource)
// arrives; Timeout naming `what` past the deadline.
Status RecvControl(Channel* channel, int source, int* from, proto::ControlMessage* msg,
                   Clock::time_point deadline, const std::string& what);

}  // namespace polis::comm
