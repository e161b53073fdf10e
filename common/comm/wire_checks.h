// Checks of what a rank receives from another rank, before any of it is
// used: control messages (protobuf ControlMessage, tag kTagControl) and the
// parameter-server headers (PushHeader, PullHeader: raw PODs).
//
// A peer that sends something out of range (a shard grant past the epoch's
// samples, a checkpoint shard outside the parameters, an unknown flag) is a
// RemoteError naming the rank, the field, what was expected and what was
// found, instead of an index out of bounds in the receiver. The caller
// supplies what it knows of the job (WireLimits). Stateless; thread-safe.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/proto/control.pb.h"
#include "common/role.h"
#include "common/status.h"

namespace polis::comm {

// What a receiver knows of the job, to bound received values.
struct WireLimits {
  int epochs = 0;
  int64_t samples_per_epoch = 0;  // N: positions of an epoch's permutation
  int workers = 0;
  int servers = 0;
  int64_t parameter_count = 0;
  int64_t outputs = 0;  // model outputs per sample: a confusion matrix holds outputs²
};

// The bytes of a control message from rank `from`; RemoteError if they do
// not parse.
Status DecodeControl(std::string_view bytes, int from, proto::ControlMessage* msg);

// Fields of a parsed control message against the limits: exactly one body
// set; epochs in [0, epochs); sample positions and counts in [0, N]; shard
// grants and checkpoint key ranges non-empty-or-empty ranges inside their
// space; server indices in [0, servers); ranks in [0, 1 + servers + workers);
// one consumed count per worker; a checkpoint shard's path a plain file
// name; times and losses finite (losses may be NaN: a diverged worker
// reports it); evaluation counts within their samples, and a confusion
// matrix (final evaluations only) of outputs² counts adding up to them;
// secure-aggregation keys of 32 bytes, one per worker in the relay.
Status CheckControlMessage(const proto::ControlMessage& msg, int from, const WireLimits& limits);

// A worker's push header as a server receives it: step, samples and the
// epoch's consumed count non-negative and within the epoch, only known flags.
Status CheckPushHeader(const PushHeader& h, int from, const WireLimits& limits);
// A server's reply header as a worker receives it.
Status CheckPullHeader(const PullHeader& h, int from);

}  // namespace polis::comm
