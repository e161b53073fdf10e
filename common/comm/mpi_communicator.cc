// MpiCommunicator: the MPI implementation of Communicator
// (common/comm/communicator.h; design in docs/design/allreduce.md).
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "common/comm/allreduce_context.h"
#include "common/comm/allreduce_direct.h"
#include "common/comm/allreduce_hierarchical.h"
#include "common/comm/allreduce_rabenseifner.h"
#include "common/comm/allreduce_recursive_doubling.h"
#include "common/comm/allreduce_ring.h"
#include "common/comm/mpi_communicator.h"
#include "common/env.h"
#include "common/log.h"

namespace polis::comm {

StatusOr<AllreduceAlgorithm> ParseAllreduceAlgorithm(const std::string& name) {
  if (name == "auto") return AllreduceAlgorithm::kAuto;
  if (name == "mpi") return AllreduceAlgorithm::kMpi;
  if (name == "ring") return AllreduceAlgorithm::kRing;
  if (name == "rd") return AllreduceAlgorithm::kRecursiveDoubling;
  if (name == "rabenseifner") return AllreduceAlgorithm::kRabenseifner;
  if (name == "direct") return AllreduceAlgorithm::kDirect;
  if (name == "hier") return AllreduceAlgorithm::kHierarchical;
  return InvalidArgument(
      "unknown all-reduce algorithm '{}'; known: auto, mpi, ring, rd, rabenseifner, direct, hier",
      name);
}

const char* AllreduceAlgorithmName(AllreduceAlgorithm algorithm) {
  switch (algorithm) {
    case AllreduceAlgorithm::kAuto: return "auto";
    case AllreduceAlgorithm::kMpi: return "mpi";
    case AllreduceAlgorithm::kRing: return "ring";
    case AllreduceAlgorithm::kRecursiveDoubling: return "rd";
    case AllreduceAlgorithm::kRabenseifner: return "rabenseifner";
    case AllreduceAlgorithm::kDirect: return "direct";
    case AllreduceAlgorithm::kHierarchical: return "hier";
  }
  return "?";
}

const char* WireTypeName(WireType wire) {
  switch (wire) {
    case WireType::kFloat32: return "fp32";
    case WireType::kBFloat16: return "bf16";
    case WireType::kFloat16: return "fp16";
  }
  return "?";
}

int WireBytes(WireType wire) { return wire == WireType::kFloat32 ? 4 : 2; }

namespace {

using internal::CallInfo;
using internal::CollectiveContext;
using internal::kCollectivePeer;

// Pipeline depth of the ring: receives posted ahead, each into its own
// segment slot (8 x 128 KiB = 1 MiB of slots).
constexpr int kRingDepth = 8;

// How kAuto picks by size: the largest message, in wire bytes, that takes
// each algorithm, tried in this order; larger ones take the ring. Measured
// on the 2-core build VM (docs/design/allreduce.md, "Thresholds").
// Recursive doubling moves the whole buffer log2(p) times (+2 for the folded
// ranks of a non-power of two) in as many handoffs; the others move 2(n-1)/n
// of it, in 2 log2(p) (+2) handoffs (Rabenseifner), two (direct, on one
// host) or 2(n-1) (the ring). With 2 ranks all but recursive doubling are
// the same exchange and the ring is the tuned one; the ring's steady stream
// of cache-sized segments wins again once the copies dominate.
struct SizeThresholds {
  int64_t rd_max = 0;
  int64_t rabenseifner_max = 0;
  int64_t direct_max = 0;
  // Hierarchical from this size up, where the topology has more than one
  // host and more than one rank on some host (INT64_MAX: never).
  int64_t hier_min = INT64_MAX;
};

// The hosts of a communicator's ranks, from the placement.
struct Topology {
  int hosts = 1;
  int max_local = 1;  // the most ranks on one host
  int min_local = 1;  // the fewest ranks on one host
  // Several hosts, and several ranks on at least one: what the
  // hierarchical algorithm is for.
  bool layered() const { return hosts > 1 && max_local > 1; }
};

// Smallest message (wire bytes) for which kAuto takes the hierarchical
// algorithm on a layered topology: measured on the emulated cluster
// (docs/design/allreduce.md, "Across hosts").
constexpr int64_t kHierMinBytes = int64_t{128} << 10;

SizeThresholds DefaultThresholds(int size, bool one_host) {
  SizeThresholds t;
  t.rd_max = size <= 2 ? 16 << 10 : size == 4 ? 64 << 10 : 32 << 10;
  if (size <= 2) return t;
  if (one_host && size <= 8) {
    // Measured at 3, 4 and 8 ranks; 5-7 take the 8-rank rule.
    if (size >= 5) t.rabenseifner_max = 64 << 10;
    t.direct_max = size == 3 ? 16 << 20 : size == 4 ? 4 << 20 : 8 << 20;
  } else {
    // Across hosts (n-1 messages per phase do not pay there) or beyond the
    // measured group sizes: Rabenseifner's few steps. Measured only at 4
    // ranks on 4 emulated hosts, where the ring's steady stream over TCP
    // wins from 4 MiB (docs/design/allreduce.md, "Across hosts").
    t.rabenseifner_max = size == 3 ? 256 << 10 : size == 4 ? 2 << 20 : 16 << 20;
  }
  return t;
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm dup, MPI_Comm local, MPI_Comm cross, Topology topology,
                  std::vector<int> local_ranks, std::vector<int> cross_ranks, int host_index,
                  int64_t max_count, std::optional<AllreduceAlgorithm> forced,
                  SizeThresholds thresholds, int64_t segment_bytes)
      : ctx_(dup),
        ring_(&ctx_, segment_bytes, kRingDepth),
        rd_(&ctx_),
        rabenseifner_(&ctx_, segment_bytes, kRingDepth),
        direct_(&ctx_),
        forced_(forced),
        thresholds_(thresholds) {
    max_count_ = std::max<int64_t>(max_count, 0);
    auto local_ctx = std::make_unique<CollectiveContext>(local);
    local_ctx->SetScope(fmt::format("inside host {}", host_index), std::move(local_ranks));
    std::unique_ptr<CollectiveContext> cross_ctx;
    if (cross != MPI_COMM_NULL) {
      cross_ctx = std::make_unique<CollectiveContext>(cross);
      cross_ctx->SetScope(fmt::format("across hosts, local index {}", local_ctx->rank()),
                          std::move(cross_ranks));
    }
    // Its scratch now only where kAuto may pick it; an explicit kHierarchical
    // elsewhere reserves it on first use.
    const bool may_pick = thresholds_.hier_min != INT64_MAX ||
                          (forced_ && *forced_ == AllreduceAlgorithm::kHierarchical);
    hier_ = std::make_unique<internal::AllreduceHierarchical>(
        &ctx_, std::move(local_ctx), std::move(cross_ctx), topology.min_local, topology.hosts,
        topology.max_local, may_pick ? max_count_ : 0, segment_bytes, kRingDepth);
    // Every algorithm and wire fits in 4 bytes per float (see ScratchBytes),
    // but for the direct algorithm's block rounding with tiny counts.
    ctx_.scratch().Reserve(static_cast<size_t>(std::max(
        max_count_ * 4, internal::AllreduceDirect::ScratchBytes(max_count_, WireType::kBFloat16,
                                                                ctx_.size()))));
  }

  int rank() const override { return ctx_.rank(); }
  int size() const override { return ctx_.size(); }

  AllreduceAlgorithm Choose(int64_t count, WireType wire) const override {
    AllreduceAlgorithm a;
    if (forced_ && *forced_ != AllreduceAlgorithm::kAuto) {
      a = *forced_;
    } else if (count * WireBytes(wire) >= thresholds_.hier_min) {
      a = AllreduceAlgorithm::kHierarchical;
    } else if (count * WireBytes(wire) <= thresholds_.rd_max) {
      a = AllreduceAlgorithm::kRecursiveDoubling;
    } else if (count * WireBytes(wire) <= thresholds_.rabenseifner_max) {
      a = AllreduceAlgorithm::kRabenseifner;
    } else if (count * WireBytes(wire) <= thresholds_.direct_max) {
      a = AllreduceAlgorithm::kDirect;
    } else {
      a = AllreduceAlgorithm::kRing;
    }
    // Open MPI reduces only what MPI_FLOAT carries.
    if (a == AllreduceAlgorithm::kMpi && wire != WireType::kFloat32) a = AllreduceAlgorithm::kRing;
    return a;
  }

  Status Allreduce(float* data, int64_t count, const AllreduceOptions& options) override {
    POLIS_RETURN_IF_ERROR(CheckUsable());
    if (count < 0) return InvalidArgument("Allreduce: count is {}, expected >= 0", count);
    if (count > 0 && data == nullptr)
      return InvalidArgument("Allreduce: data is null for {} floats", count);
    AllreduceAlgorithm algo = options.algorithm == AllreduceAlgorithm::kAuto
                                  ? Choose(count, options.wire)
                                  : options.algorithm;
    if (algo == AllreduceAlgorithm::kMpi && options.wire != WireType::kFloat32)
      algo = AllreduceAlgorithm::kRing;
    ctx_.BeginCall(CallInfo{"Allreduce", algo, options.wire, count});
    if (count == 0 || size() == 1) return Status::Ok();

    int64_t need = 0;
    if (algo == AllreduceAlgorithm::kRing) need = internal::AllreduceRing::ScratchBytes(count, options.wire);
    if (algo == AllreduceAlgorithm::kRecursiveDoubling)
      need = internal::AllreduceRecursiveDoubling::ScratchBytes(count, options.wire);
    if (algo == AllreduceAlgorithm::kRabenseifner)
      need = internal::AllreduceRabenseifner::ScratchBytes(count, options.wire);
    if (algo == AllreduceAlgorithm::kDirect)
      need = internal::AllreduceDirect::ScratchBytes(count, options.wire, size());
    if (static_cast<size_t>(need) > ctx_.scratch().capacity()) {
      // Grow to what any algorithm needs for this count, so it happens once.
      POLIS_LOG(kWarn, kNet,
                "Allreduce of {} floats is larger than the max_count {} this communicator was "
                "built for: growing its scratch to {:.1f} MiB (pass a larger max_count)",
                count, max_count_, count * 4.0 / (1 << 20));
      ctx_.scratch().Reserve(static_cast<size_t>(std::max(count * 4, need)));
      max_count_ = count;
    }
    if (algo == AllreduceAlgorithm::kHierarchical && count > max_count_) {
      POLIS_LOG(kWarn, kNet,
                "Allreduce of {} floats is larger than the max_count {} this communicator was "
                "built for: growing the hierarchical algorithm's scratch (pass a larger max_count)",
                count, max_count_);
      max_count_ = count;
    }
    if (algo == AllreduceAlgorithm::kHierarchical) hier_->Reserve(max_count_);

    Status st;
    switch (algo) {
      case AllreduceAlgorithm::kRing: st = ring_.Run(data, count, options.wire); break;
      case AllreduceAlgorithm::kRecursiveDoubling: st = rd_.Run(data, count, options.wire); break;
      case AllreduceAlgorithm::kRabenseifner:
        st = rabenseifner_.Run(data, count, options.wire);
        break;
      case AllreduceAlgorithm::kDirect: st = direct_.Run(data, count, options.wire); break;
      case AllreduceAlgorithm::kHierarchical: st = hier_->Run(data, count, options.wire); break;
      case AllreduceAlgorithm::kMpi: st = RunMpi(data, count); break;
      case AllreduceAlgorithm::kAuto: st = InternalError("kAuto was not resolved"); break;
    }
    return Checked(st);
  }

  Status Broadcast(void* data, int64_t bytes, int root) override {
    POLIS_RETURN_IF_ERROR(CheckUsable());
    if (root < 0 || root >= size())
      return InvalidArgument("Broadcast: root is rank {}, expected 0..{}", root, size() - 1);
    if (bytes < 0) return InvalidArgument("Broadcast: bytes is {}, expected >= 0", bytes);
    if (bytes > 0 && data == nullptr) return InvalidArgument("Broadcast: data is null for {} bytes", bytes);
    ctx_.BeginCall(CallInfo{"Broadcast", AllreduceAlgorithm::kAuto, WireType::kFloat32, bytes});
    constexpr int64_t kPiece = int64_t{1} << 30;
    for (int64_t off = 0; off < bytes; off += kPiece) {
      MPI_Request req = MPI_REQUEST_NULL;
      const int len = static_cast<int>(std::min(kPiece, bytes - off));
      POLIS_RETURN_IF_ERROR(Checked(ToStatus(
          MPI_Ibcast(static_cast<std::byte*>(data) + off, len, MPI_BYTE, root, ctx_.comm(), &req),
          "MPI_Ibcast")));
      POLIS_RETURN_IF_ERROR(WaitCollective(&req));
    }
    return Status::Ok();
  }

  Status Allgather(const void* send, void* recv, int64_t bytes_per_rank) override {
    POLIS_RETURN_IF_ERROR(CheckUsable());
    if (bytes_per_rank < 0 || bytes_per_rank > INT32_MAX)
      return InvalidArgument("Allgather: bytes_per_rank is {}, expected 0..{}", bytes_per_rank,
                             INT32_MAX);
    if (bytes_per_rank > 0 && (send == nullptr || recv == nullptr))
      return InvalidArgument("Allgather: null buffer for {} bytes per rank", bytes_per_rank);
    ctx_.BeginCall(
        CallInfo{"Allgather", AllreduceAlgorithm::kAuto, WireType::kFloat32, bytes_per_rank});
    const int len = static_cast<int>(bytes_per_rank);
    // MPI forbids aliased buffers; the caller's own slot in recv means in-place.
    const void* src = send == static_cast<const std::byte*>(recv) + rank() * bytes_per_rank
                          ? MPI_IN_PLACE
                          : send;
    MPI_Request req = MPI_REQUEST_NULL;
    POLIS_RETURN_IF_ERROR(Checked(ToStatus(
        MPI_Iallgather(src, len, MPI_BYTE, recv, len, MPI_BYTE, ctx_.comm(), &req),
        "MPI_Iallgather")));
    return WaitCollective(&req);
  }

  Status Barrier() override {
    POLIS_RETURN_IF_ERROR(CheckUsable());
    ctx_.BeginCall(CallInfo{"Barrier", AllreduceAlgorithm::kAuto, WireType::kFloat32, -1});
    MPI_Request req = MPI_REQUEST_NULL;
    POLIS_RETURN_IF_ERROR(Checked(ToStatus(MPI_Ibarrier(ctx_.comm(), &req), "MPI_Ibarrier")));
    return WaitCollective(&req);
  }

 private:
  static Status ToStatus(int rc, const char* what) {
    return rc == MPI_SUCCESS ? Status::Ok() : MpiStatus(rc, what, __FILE__, __LINE__);
  }

  // A failed collective may leave messages in flight: refuse later calls.
  Status Checked(Status st) {
    if (!st.ok() && broken_.ok()) broken_ = st;
    return st;
  }
  Status CheckUsable() const {
    if (broken_.ok()) return Status::Ok();
    return FailedPrecondition("communicator is unusable after an earlier failure: {}",
                              broken_.ToString());
  }

  Status WaitCollective(MPI_Request* req) {
    Status st = ctx_.WaitOne(req, kCollectivePeer, false);
    if (!st.ok()) ctx_.Abandon(1, req, nullptr);
    return Checked(st);
  }

  // Open MPI's own algorithm, non-blocking so that the deadline and the
  // back-off apply (a blocking MPI_Allreduce would spin and never time out).
  Status RunMpi(float* data, int64_t count) {
    constexpr int64_t kPiece = int64_t{1} << 28;  // floats per call (MPI counts are int)
    for (int64_t off = 0; off < count; off += kPiece) {
      const int len = static_cast<int>(std::min(kPiece, count - off));
      MPI_Request req = MPI_REQUEST_NULL;
      POLIS_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data + off, len, MPI_FLOAT, MPI_SUM, ctx_.comm(),
                                     &req));
      POLIS_RETURN_IF_ERROR(WaitCollective(&req));
    }
    return Status::Ok();
  }

  CollectiveContext ctx_;
  internal::AllreduceRing ring_;
  internal::AllreduceRecursiveDoubling rd_;
  internal::AllreduceRabenseifner rabenseifner_;
  internal::AllreduceDirect direct_;
  std::unique_ptr<internal::AllreduceHierarchical> hier_;
  std::optional<AllreduceAlgorithm> forced_;
  SizeThresholds thresholds_;
  int64_t max_count_ = 0;
  Status broken_;
};

}  // namespace

StatusOr<std::unique_ptr<Communicator>> MakeMpiCommunicator(MPI_Comm comm, int64_t max_count,
                                                            const std::vector<int>& host_of_rank) {
  if (comm == MPI_COMM_NULL) return InvalidArgument("MakeMpiCommunicator: comm is MPI_COMM_NULL");
  if (max_count < 0) return InvalidArgument("MakeMpiCommunicator: max_count is {}, expected >= 0", max_count);
  std::optional<AllreduceAlgorithm> forced;
  const std::string algo = env::AllreduceAlgo();
  if (!algo.empty()) {
    auto parsed = ParseAllreduceAlgorithm(algo);
    if (!parsed.ok()) return parsed.status().WithContext("POLIS_ALLREDUCE_ALGO");
    forced = *parsed;
    POLIS_LOG(kInfo, kNet, "POLIS_ALLREDUCE_ALGO={}: all-reduce uses {} when asked for auto", algo,
              AllreduceAlgorithmName(*forced));
  }
  MPI_Comm dup = MPI_COMM_NULL;
  POLIS_MPI_CHECK(MPI_Comm_dup(comm, &dup));
  int size = 1, rank = 0;
  POLIS_MPI_CHECK(MPI_Comm_size(dup, &size));
  POLIS_MPI_CHECK(MPI_Comm_rank(dup, &rank));

  // Hosts from the placement: dense indices in order of first appearance.
  // Every rank must pass the same list; checked with one collective so that
  // every rank returns the same answer.
  const bool given = !host_of_rank.empty();
  const bool right_size = !given || static_cast<int>(host_of_rank.size()) == size;
  std::vector<int> host(size, 0);
  Topology topo;
  if (given && right_size) {
    std::map<int, int> index;
    for (int r = 0; r < size; ++r) {
      auto it = index.emplace(host_of_rank[r], static_cast<int>(index.size())).first;
      host[r] = it->second;
    }
    topo.hosts = static_cast<int>(index.size());
  }
  uint64_t digest = right_size ? 1469598103934665603ull : static_cast<uint64_t>(rank) + 1;
  for (int h : host) digest = (digest ^ static_cast<uint32_t>(h)) * 1099511628211ull;
  uint64_t lo_hi[2] = {digest, ~digest}, agreed[2] = {0, 0};
  POLIS_MPI_CHECK(MPI_Allreduce(lo_hi, agreed, 2, MPI_UINT64_T, MPI_MIN, dup));
  if (!right_size || agreed[0] != digest || ~agreed[1] != digest) {
    MPI_Comm_free(&dup);
    if (!right_size)
      return InvalidArgument("MakeMpiCommunicator: host_of_rank has {} entries for {} ranks",
                             host_of_rank.size(), size);
    return InvalidArgument("MakeMpiCommunicator: host_of_rank differs between ranks");
  }
  std::vector<int> per_host(topo.hosts, 0);
  for (int h : host) ++per_host[h];
  topo.max_local = *std::max_element(per_host.begin(), per_host.end());
  topo.min_local = *std::min_element(per_host.begin(), per_host.end());

  // The hierarchical algorithm's groups: this host's ranks, and the ranks
  // with this rank's local index (if below the smallest host's rank count)
  // across hosts.
  std::vector<int> local_ranks, cross_ranks;
  for (int r = 0; r < size; ++r)
    if (host[r] == host[rank]) local_ranks.push_back(r);
  const int local_index = static_cast<int>(
      std::find(local_ranks.begin(), local_ranks.end(), rank) - local_ranks.begin());
  MPI_Comm local = MPI_COMM_NULL, cross = MPI_COMM_NULL;
  POLIS_MPI_CHECK(MPI_Comm_split(dup, host[rank], rank, &local));
  if (topo.hosts > 1) {
    const bool owner = local_index < topo.min_local;
    POLIS_MPI_CHECK(MPI_Comm_split(dup, owner ? local_index : MPI_UNDEFINED, rank, &cross));
    if (owner) {
      std::vector<int> seen(topo.hosts, 0);
      for (int r = 0; r < size; ++r)
        if (seen[host[r]]++ == local_index) cross_ranks.push_back(r);
    }
  }

  bool one_host;
  if (given) {
    one_host = topo.hosts == 1;
  } else {
    // No placement: whether every rank shares this host (kDirect is for one
    // host only), as Open MPI sees it.
    MPI_Comm node = MPI_COMM_NULL;
    POLIS_MPI_CHECK(MPI_Comm_split_type(dup, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    int node_size = 0;
    POLIS_MPI_CHECK(MPI_Comm_size(node, &node_size));
    POLIS_MPI_CHECK(MPI_Comm_free(&node));
    one_host = node_size == size;
  }
  SizeThresholds thresholds = DefaultThresholds(size, one_host);
  if (topo.layered()) thresholds.hier_min = kHierMinBytes;
  if (env::AllreduceRdMaxKiB() >= 0) {
    thresholds.rd_max = int64_t{env::AllreduceRdMaxKiB()} << 10;
    POLIS_LOG(kInfo, kNet, "POLIS_ALLREDUCE_RD_MAX_KB={}", env::AllreduceRdMaxKiB());
  }
  if (env::AllreduceHierMinKiB() >= 0 && topo.layered()) {
    thresholds.hier_min = int64_t{env::AllreduceHierMinKiB()} << 10;
    POLIS_LOG(kInfo, kNet, "POLIS_ALLREDUCE_HIER_MIN_KB={}", env::AllreduceHierMinKiB());
  }
  const int64_t segment = int64_t{env::AllreduceSegmentKiB()} << 10;
  return std::unique_ptr<Communicator>(std::make_unique<MpiCommunicator>(
      dup, local, cross, topo, std::move(local_ranks), std::move(cross_ranks), host[rank],
      max_count, forced, thresholds, segment));
}

}  // namespace polis::comm
