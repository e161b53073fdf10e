#include "common/trace/timeline_transfer.h"

#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/checkpoint_transfer.h"
#include "common/comm/channel.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/trace/trace.h"

namespace polis::trace {
namespace {

// This rank's clock against the coordinator's, set by StartTimeline.
struct ClockAlignment {
  int64_t offset_ns = 0;      // add to a local time to get the coordinator's
  int64_t origin_ns = 0;      // the coordinator's time zero
  int64_t round_trip_ns = 0;  // of the round the offset came from; 0 on the coordinator's host
};
ClockAlignment g_clock;

// A short wait that must not sleep (the round trip is the offset's error
// bound) but yields the core to the other ranks.
Status WaitSpinning(comm::Channel* ch, comm::Request* req, comm::Clock::time_point deadline, const char* what,
                    int peer) {
  bool done = false;
  while (true) {
    POLIS_RETURN_IF_ERROR(ch->Test(req, 1, &done));
    if (done) return Status::Ok();
    if (comm::Clock::now() > deadline) return Timeout("timeline clock alignment: {} rank {}", what, peer);
    std::this_thread::yield();
  }
}

bool SeveralHosts(const RoleContext& ctx) {
  std::set<std::string> hosts;
  for (const auto& p : ctx.placement) hosts.insert(p.host);
  return hosts.size() > 1;
}

// Cristian's algorithm, run by the coordinator, one rank at a time: it
// sends a ping, the rank answers at once with its clock, and the round
// trip with the shortest time bounds the error. The coordinator times the
// rounds, so a rank waiting for its turn adds nothing to them; it then
// sends each rank its offset and round trip.
Status AlignClock(const RoleContext& ctx) {
  const int coord = ctx.coordinator_rank();
  const auto deadline = comm::DeadlineFromNow();
  comm::Channel* ch = ctx.data;
  constexpr int64_t kI64 = sizeof(int64_t);
  // The coordinator's time zero, to every rank (before any ping: one sender,
  // one tag, so it arrives first).
  if (ctx.rank == coord) {
    g_clock.origin_ns = NowNs();
    for (int r = 0; r < ctx.world; ++r)
      if (r != coord) POLIS_RETURN_IF_ERROR(ch->Send(&g_clock.origin_ns, kI64, r, kTagTimelineClock));
  } else {
    comm::Request req;
    POLIS_RETURN_IF_ERROR(ch->Irecv(&g_clock.origin_ns, kI64, coord, kTagTimelineClock, &req));
    POLIS_RETURN_IF_ERROR(WaitSpinning(ch, &req, deadline, "waiting for the time origin from", coord));
  }
  if (!SeveralHosts(ctx)) return Status::Ok();
  const std::string& coord_host = ctx.placement.at(coord).host;
  if (ctx.rank == coord) {
    for (int r = 0; r < ctx.world; ++r) {
      if (r == coord || ctx.placement.at(r).host == coord_host) continue;
      int64_t result[2] = {0, std::numeric_limits<int64_t>::max()};  // offset, round trip
      for (int k = 0; k < kClockRounds; ++k) {
        int64_t ping = k, theirs = 0;
        comm::Request req[2];
        POLIS_RETURN_IF_ERROR(ch->Irecv(&theirs, kI64, r, kTagTimelineClock, &req[1]));
        const int64_t t0 = NowNs();
        POLIS_RETURN_IF_ERROR(ch->Isend(&ping, kI64, r, kTagTimelineClock, &req[0]));
        POLIS_RETURN_IF_ERROR(WaitSpinning(ch, &req[0], deadline, "pinging", r));
        POLIS_RETURN_IF_ERROR(WaitSpinning(ch, &req[1], deadline, "waiting for", r));
        const int64_t t1 = NowNs();
        if (t1 - t0 < result[1]) result[0] = (t0 + t1) / 2 - theirs, result[1] = t1 - t0;
      }
      comm::Request req;
      POLIS_RETURN_IF_ERROR(ch->Isend(result, 2 * kI64, r, kTagTimelineClock, &req));
      POLIS_RETURN_IF_ERROR(WaitSpinning(ch, &req, deadline, "sending the offset to", r));
    }
    return Status::Ok();
  }
  if (ctx.placement.at(ctx.rank).host == coord_host) return Status::Ok();
  for (int k = 0; k < kClockRounds; ++k) {
    int64_t ping = 0;
    comm::Request req;
    POLIS_RETURN_IF_ERROR(ch->Irecv(&ping, kI64, coord, kTagTimelineClock, &req));
    POLIS_RETURN_IF_ERROR(WaitSpinning(ch, &req, deadline, "waiting for", coord));
    int64_t now = NowNs();
    POLIS_RETURN_IF_ERROR(ch->Isend(&now, kI64, coord, kTagTimelineClock, &req));
    POLIS_RETURN_IF_ERROR(WaitSpinning(ch, &req, deadline, "answering", coord));
  }
  int64_t result[2] = {0, 0};
  comm::Request req;
  POLIS_RETURN_IF_ERROR(ch->Irecv(result, 2 * kI64, coord, kTagTimelineClock, &req));
  POLIS_RETURN_IF_ERROR(WaitSpinning(ch, &req, deadline, "waiting for the offset from", coord));
  g_clock.offset_ns = result[0];
  g_clock.round_trip_ns = result[1];
  return Status::Ok();
}

}  // namespace

std::string TimelinePath(const RoleContext& ctx) {
  const std::string& p = ctx.job.spec.monitoring().timeline_path();
  if (p.empty() || std::filesystem::path(p).is_absolute()) return p;
  return ctx.run_dir + "/" + p;
}

int64_t RankShareBytes(const proto::JobSpec& spec, int world) {
  const int64_t total = spec.monitoring().timeline_max_mb() << 20;
  return std::max<int64_t>((total - kTimelineHeaderBytes) / std::max(world, 1), 0);
}

Status StartTimeline(const RoleContext& ctx) {
  if (TimelinePath(ctx).empty()) return Status::Ok();
  Options o;
  o.pid = ctx.rank;
  o.process_name = ctx.RankName(ctx.rank);
  o.max_bytes = RankShareBytes(ctx.job.spec, ctx.world);
  POLIS_RETURN_IF_ERROR(AlignClock(ctx));
  Start(o);
  return Status::Ok();
}

Status FinishTimeline(const RoleContext& ctx) {
  const std::string path = TimelinePath(ctx);
  if (path.empty()) return Status::Ok();
  Stop();
  ExportResult mine = Export(g_clock.offset_ns, g_clock.origin_ns);
  // How this rank's clock was aligned: the offset applied and the round
  // trip it came from (its error bound is half of that; 0 on the
  // coordinator's host).
  mine.json += fmt::format(",\n" R"({{"name":"clock_offset","ph":"M","pid":{},"args":{{"offset_ns":{},"round_trip_ns":{}}}}})",
                           ctx.rank, g_clock.offset_ns, g_clock.round_trip_ns);
  const int coord = ctx.coordinator_rank();
  if (ctx.rank != coord) {
    // The coordinator takes the parts once it has published: no deadline
    // short of a day (a coordinator that dies ends the job anyway).
    return SendBlob(ctx.data, coord, kTagTimelineBytes, std::move(mine.json),
                    comm::Clock::now() + std::chrono::hours(24), "the coordinator to take this rank's timeline");
  }
  const int64_t share = RankShareBytes(ctx.job.spec, ctx.world);
  std::string file = "{\"traceEvents\":[\n";
  file += mine.json;
  nlohmann::json truncated = nlohmann::json::array();
  if (mine.truncated) truncated.push_back(coord);
  int64_t events = mine.events;
  for (int r = 0; r < ctx.world; ++r) {
    if (r == coord) continue;
    POLIS_ASSIGN_OR_RETURN(std::string part, RecvBlob(ctx.data, r, kTagTimelineBytes, share + kTimelineHeaderBytes,
                                                      comm::DeadlineFromNow(), fmt::format("rank {}'s timeline", r)));
    if (part.find("{\"name\":\"truncated\",\"ph\":\"M\"") != std::string::npos) truncated.push_back(r);
    events += static_cast<int64_t>(std::count(part.begin(), part.end(), '\n'));
    file += ",\n";
    file += part;
  }
  const nlohmann::json other = {
      {"job", ctx.job.spec.name()},
      {"ranks", ctx.world},
      {"clock", SeveralHosts(ctx) ? "the coordinator's steady clock; ranks on other hosts aligned to it by the "
                                    "shortest of 8 round trips (error below half of it)"
                                  : "one host: every rank's steady clock is the same"},
      {"max_bytes", ctx.job.spec.monitoring().timeline_max_mb() << 20},
      {"truncated_ranks", truncated}};
  file += "\n],\"displayTimeUnit\":\"ms\",\"otherData\":" + other.dump() + "}\n";
  POLIS_RETURN_IF_ERROR(WriteFileAtomic(path, file).WithContext("writing the timeline"));
  POLIS_LOG(kInfo, kCoord, "timeline: {} bytes, about {} events of {} ranks written to {}", file.size(), events,
            ctx.world, path);
  return Status::Ok();
}

}  // namespace polis::trace
