// The job's timeline across ranks (docs/timeline.md): every rank records its
// own events in memory (common/trace/trace.h); at the end they travel to the
// coordinator over the data channel, which alone writes the file: the hosts need not
// share a file system (docs/design/multi-host.md, "What travels where").
//
//   every rank, at start   StartTimeline: recording on, with its share of
//                          the size cap; the coordinator's clock broadcast as
//                          time zero; ranks on other hosts than the
//                          coordinator's measure their clock's offset to it
//   every rank, at end     FinishTimeline: its events as JSON, to the
//                          coordinator (SendBlob), which joins them in rank
//                          order and writes the file (temporary name, fsync,
//                          rename)
//
// Clocks: every event is taken with the steady clock. Ranks on the
// coordinator's host share that clock exactly (offset 0). For a rank on
// another host the coordinator times kClockRounds round trips (it pings,
// the rank answers with its clock) and keeps the offset of the shortest
// (Cristian's algorithm): the rank's events are placed within half that
// round trip of the coordinator's time line. Each rank's part of the file
// says so in a "clock_offset" metadata event (offset_ns, round_trip_ns). MPI_Wtime is not used: Open MPI does not promise
// MPI_WTIME_IS_GLOBAL.
//
// Free functions taking the RoleContext the roles already pass around; call
// them from the thread that owns the channels, on every rank (both are collective
// when the timeline is on, and return at once when it is off).
#pragma once

#include <string>

#include "common/role.h"
#include "common/status.h"

namespace polis::trace {

// Tags on the data communicator, beside common/checkpoint_transfer.h's.
enum TimelineTag : int {
  kTagTimelineClock = 33,  // rank <-> coordinator: clock offset rounds
  kTagTimelineBytes = 34,  // rank -> coordinator: its events
};
constexpr int kClockRounds = 8;
// The file's own bytes around the ranks' parts (brackets, otherData).
constexpr int64_t kTimelineHeaderBytes = 4096;

// The file the job's timeline goes to: monitoring.timeline_path, relative
// to the run directory unless absolute (polis-run --timeline passes an
// absolute path); "" when the timeline is off.
std::string TimelinePath(const RoleContext& ctx);
// The bytes one rank's part may take: its share of monitoring.timeline_max_mb.
int64_t RankShareBytes(const proto::JobSpec& spec, int world);

// Collective: starts this rank's recording and aligns its clock.
Status StartTimeline(const RoleContext& ctx);
// Collective, after the role returned without error: the coordinator
// gathers every rank's events and writes the file.
Status FinishTimeline(const RoleContext& ctx);

}  // namespace polis::trace
