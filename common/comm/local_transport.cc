#include "common/comm/local_transport.h"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <unordered_map>

#include "common/comm/half.h"
#include "common/env.h"

namespace polis::comm {

// One network of mailboxes (the control and data channels are two).
struct LocalFabric::Network {
  struct Message {
    int source = 0, tag = 0;
    std::string bytes;
  };
  struct Posted {
    void* buf = nullptr;
    int64_t bytes = 0;
    int source = 0, tag = 0, dest = 0;
    bool done = false;
    Status error;
  };
  explicit Network(int size) : unexpected(size), posted(size) {}

  static bool Matches(int want_source, int want_tag, int source, int tag) {
    return (want_source == kAnySource || want_source == source) && want_tag == tag;
  }
  static Status Deliver(const std::string& bytes, int source, int tag, void* buf, int64_t cap) {
    if (static_cast<int64_t>(bytes.size()) > cap)
      return InvalidArgument("a message of {} bytes from rank {} on tag {} does not fit a {}-byte receive",
                             bytes.size(), source, tag, cap);
    std::memcpy(buf, bytes.data(), bytes.size());
    return Status::Ok();
  }

  std::mutex mu;
  std::condition_variable arrived;
  std::vector<std::deque<Message>> unexpected;   // by destination
  std::vector<std::list<uint64_t>> posted;       // by destination, in post order
  std::unordered_map<uint64_t, Posted> receives;  // posted, not yet taken by Test
  uint64_t next_id = 1;
};

namespace {

using Network = LocalFabric::Network;

class LocalChannel final : public Channel {
 public:
  LocalChannel(Network* net, int rank, int size) : net_(net), rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  Status Isend(const void* buf, int64_t bytes, int dest, int tag, Request* req) override {
    *req = Request();
    return Send(buf, bytes, dest, tag);
  }
  Status Send(const void* buf, int64_t bytes, int dest, int tag) override {
    POLIS_RETURN_IF_ERROR(CheckRank(dest));
    std::string data(static_cast<const char*>(buf), static_cast<size_t>(bytes));
    std::lock_guard<std::mutex> lock(net_->mu);
    for (auto it = net_->posted[dest].begin(); it != net_->posted[dest].end(); ++it) {
      Network::Posted& p = net_->receives.at(*it);
      if (!Network::Matches(p.source, p.tag, rank_, tag)) continue;
      p.error = Network::Deliver(data, rank_, tag, p.buf, p.bytes);
      p.done = true;
      net_->posted[dest].erase(it);
      net_->arrived.notify_all();
      return Status::Ok();
    }
    net_->unexpected[dest].push_back({rank_, tag, std::move(data)});
    net_->arrived.notify_all();
    return Status::Ok();
  }
  Status Irecv(void* buf, int64_t bytes, int source, int tag, Request* req) override {
    if (source != kAnySource) POLIS_RETURN_IF_ERROR(CheckRank(source));
    std::lock_guard<std::mutex> lock(net_->mu);
    auto& box = net_->unexpected[rank_];
    for (auto it = box.begin(); it != box.end(); ++it) {
      if (!Network::Matches(source, tag, it->source, it->tag)) continue;
      Status st = Network::Deliver(it->bytes, it->source, it->tag, buf, bytes);
      box.erase(it);
      *req = Request();
      return st;
    }
    const uint64_t id = net_->next_id++;
    net_->receives.emplace(id, Network::Posted{buf, bytes, source, tag, rank_, false, Status::Ok()});
    net_->posted[rank_].push_back(id);
    req->set_handle(id);
    return Status::Ok();
  }
  Status Test(Request* reqs, int n, bool* all_done) override {
    std::lock_guard<std::mutex> lock(net_->mu);
    bool done = true;
    for (int i = 0; i < n; ++i) {
      if (!reqs[i].pending()) continue;
      auto it = net_->receives.find(reqs[i].handle());
      if (it == net_->receives.end()) return InternalError("unknown request {}", reqs[i].handle());
      if (!it->second.done) {
        done = false;
        continue;
      }
      Status st = it->second.error;
      net_->receives.erase(it);
      reqs[i] = Request();
      POLIS_RETURN_IF_ERROR(st);
    }
    *all_done = done;
    return Status::Ok();
  }
  void Cancel(Request* reqs, int n) override {
    std::lock_guard<std::mutex> lock(net_->mu);
    for (int i = 0; i < n; ++i) {
      if (!reqs[i].pending()) continue;
      net_->posted[rank_].remove(reqs[i].handle());
      net_->receives.erase(reqs[i].handle());
      reqs[i] = Request();
    }
  }
  StatusOr<bool> Probe(int source, int tag, Probed* found) override {
    std::lock_guard<std::mutex> lock(net_->mu);
    for (const auto& m : net_->unexpected[rank_]) {
      if (!Network::Matches(source, tag, m.source, m.tag)) continue;
      found->source = m.source;
      found->bytes = static_cast<int64_t>(m.bytes.size());
      return true;
    }
    return false;
  }
  Status Recv(void* buf, int64_t bytes, int source, int tag) override {
    Request req;
    POLIS_RETURN_IF_ERROR(Irecv(buf, bytes, source, tag, &req));
    const auto deadline = DeadlineFromNow();
    std::unique_lock<std::mutex> lock(net_->mu);
    while (req.pending()) {
      auto it = net_->receives.find(req.handle());
      if (it->second.done) {
        Status st = it->second.error;
        net_->receives.erase(it);
        return st;
      }
      if (net_->arrived.wait_until(lock, deadline) == std::cv_status::timeout)
        return Timeout("no message from rank {} on tag {} after {} s", source, tag, env::TimeoutSeconds());
    }
    return Status::Ok();
  }

 private:
  Status CheckRank(int r) const {
    if (r < 0 || r >= size_) return InvalidArgument("rank {} outside [0, {})", r, size_);
    return Status::Ok();
  }
  Network* net_;
  int rank_, size_;
};

}  // namespace

// The workers' collectives: every member deposits its arguments; the last
// to arrive does the whole operation on everyone's buffers (all are
// blocked meanwhile) and releases them.
struct LocalFabric::Group {
  explicit Group(std::vector<int> ranks) : world_ranks(std::move(ranks)), slots(world_ranks.size()) {}
  struct Slot {
    void* data = nullptr;
    const void* in = nullptr;
    bool arrived = false;
  };
  std::vector<int> world_ranks;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Slot> slots;
  int arrived = 0;
  uint64_t generation = 0;

  Status Run(int me, void* data, const void* in, const std::function<void(std::vector<Slot>&)>& op,
             const char* what) {
    std::unique_lock<std::mutex> lock(mu);
    slots[me] = {data, in, true};
    const uint64_t gen = generation;
    if (++arrived == static_cast<int>(slots.size())) {
      op(slots);
      for (auto& s : slots) s.arrived = false;
      arrived = 0;
      ++generation;
      cv.notify_all();
      return Status::Ok();
    }
    const auto deadline = DeadlineFromNow();
    while (generation == gen) {
      if (cv.wait_until(lock, deadline) == std::cv_status::timeout && generation == gen) {
        std::string missing;
        for (size_t i = 0; i < slots.size(); ++i)
          if (!slots[i].arrived) missing += fmt::format("{}rank {}", missing.empty() ? "" : ", ", world_ranks[i]);
        return Timeout("{} not entered after {} s by {}", what, env::TimeoutSeconds(), missing);
      }
    }
    return Status::Ok();
  }
};

namespace {

using Group = LocalFabric::Group;

float RoundToWire(float v, WireType wire) {
  switch (wire) {
    case WireType::kFloat32: return v;
    case WireType::kBFloat16: return Bf16ToFloat(FloatToBf16(v));
    case WireType::kFloat16: return HalfToFloat(FloatToHalf(v));
  }
  return v;
}

class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator(std::shared_ptr<Group> group, int me) : group_(std::move(group)), me_(me) {}
  int rank() const override { return me_; }
  int size() const override { return static_cast<int>(group_->slots.size()); }

  Status Allreduce(float* data, int64_t count, const AllreduceOptions& options) override {
    const WireType wire = options.wire;
    return group_->Run(me_, data, nullptr, [count, wire](std::vector<Group::Slot>& s) {
      for (int64_t i = 0; i < count; ++i) {
        float sum = 0;
        for (auto& slot : s) sum += static_cast<float*>(slot.data)[i];
        sum = s.size() > 1 ? RoundToWire(sum, wire) : sum;
        for (auto& slot : s) static_cast<float*>(slot.data)[i] = sum;
      }
    }, "all-reduce");
  }
  Status Broadcast(void* data, int64_t bytes, int root) override {
    if (root < 0 || root >= size()) return InvalidArgument("broadcast root {} outside [0, {})", root, size());
    return group_->Run(me_, data, nullptr, [bytes, root](std::vector<Group::Slot>& s) {
      for (size_t r = 0; r < s.size(); ++r)
        if (static_cast<int>(r) != root) std::memcpy(s[r].data, s[root].data, static_cast<size_t>(bytes));
    }, "broadcast");
  }
  Status Allgather(const void* send, void* recv, int64_t bytes_per_rank) override {
    return group_->Run(me_, recv, send, [bytes_per_rank](std::vector<Group::Slot>& s) {
      for (auto& dst : s)
        for (size_t r = 0; r < s.size(); ++r)
          std::memcpy(static_cast<char*>(dst.data) + r * bytes_per_rank, s[r].in, static_cast<size_t>(bytes_per_rank));
    }, "all-gather");
  }
  Status Barrier() override {
    return group_->Run(me_, nullptr, nullptr, [](std::vector<Group::Slot>&) {}, "barrier");
  }
  AllreduceAlgorithm Choose(int64_t, WireType) const override { return AllreduceAlgorithm::kDirect; }

 private:
  std::shared_ptr<Group> group_;
  int me_;
};

class LocalTransport final : public Transport {
 public:
  LocalTransport(Network* control, Network* data, std::shared_ptr<Group> workers, int rank, int size)
      : control_(control, rank, size), data_(data, rank, size), workers_(std::move(workers)), rank_(rank) {}
  Channel* control() override { return &control_; }
  Channel* data() override { return &data_; }
  StatusOr<std::unique_ptr<Communicator>> WorkersCommunicator(int64_t, const std::vector<int>&) override {
    const auto& ranks = workers_->world_ranks;
    for (size_t i = 0; i < ranks.size(); ++i)
      if (ranks[i] == rank_) return std::unique_ptr<Communicator>(new LocalCommunicator(workers_, static_cast<int>(i)));
    return FailedPrecondition("only workers take part in all-reduce");
  }

 private:
  LocalChannel control_, data_;
  std::shared_ptr<Group> workers_;
  int rank_;
};

}  // namespace

LocalFabric::LocalFabric(int size, std::vector<int> worker_ranks)
    : control_(std::make_unique<Network>(size)), data_(std::make_unique<Network>(size)),
      workers_(std::make_shared<Group>(std::move(worker_ranks))) {
  for (int r = 0; r < size; ++r)
    transports_.push_back(std::make_unique<LocalTransport>(control_.get(), data_.get(), workers_, r, size));
}

LocalFabric::~LocalFabric() = default;

Transport* LocalFabric::transport(int rank) { return transports_.at(rank).get(); }

}  // namespace polis::comm
